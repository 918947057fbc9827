#!/usr/bin/env bash
# Runs every keyward test on a fresh machine: installs what it needs
# (scripts/setup.sh), checks formatting and lints, runs all Go tests with
# the race detector (unit, fuzz seeds, and end-to-end through the real Envoy
# with the official SDKs), the container image's tests, a short fuzzing pass
# over every parser, the benchmarks, the load comparison against an
# allow-everything server, and the quickstart with its output checked.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh

export PATH="$root/.tools/venv/bin:$root/.tools/bin:$PATH"
export KEYWARD_PYTHON="$root/.tools/venv/bin/python"
export KEYWARD_REQUIRE_E2E=1 # missing Envoy or SDKs fail the run instead of skipping

step() { printf '\n== %s\n' "$*"; }

step "gofmt, go vet, staticcheck"
unformatted=$(gofmt -l .)
if [[ -n "$unformatted" ]]; then
  echo "not gofmt-ed:"; echo "$unformatted"; exit 1
fi
go vet ./...
staticcheck ./...
# The Kubernetes manifests' test: a Go module of its own (k8s.io/api stays
# out of keyward's binary).
(cd deploy/kubernetes && go vet ./... && staticcheck ./...)
(cd deploy/image && go vet ./... && staticcheck ./...)
(cd examples/istio && go vet ./... && staticcheck ./...)

# An execution count, not a duration: Go 1.26's fuzz coordinator can report
# "context deadline exceeded" at a -fuzztime deadline without any finding
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
# Targets named Fuzz...Live drive real I/O (every execution costs real
# requests, the Vault store's names against an OpenBao dev server, or writes
# a whole file store to disk), so they
# get a smaller count, still above their seed corpus so that the mutator
# runs.
step "fuzzing every parser (${FUZZTIME:=20000x} each; Fuzz...Live targets ${LIVE_FUZZTIME:=2000x})"
while read -r pkg target; do
  count=$FUZZTIME
  if [[ $target == *Live ]]; then count=$LIVE_FUZZTIME; fi
  if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$count" "$pkg" 2>&1); then
    echo "$out"; echo "fuzz $target ($pkg): FAILED"; exit 1
  fi
  echo "fuzz $target ($pkg): ok (${SECONDS}s into the run)"
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
  pkg="./$(dirname "${f#./}")"
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | sed "s|^|$pkg |"
done)

step "benchmarks"
go test -run '^$' -bench . -benchmem -benchtime "${BENCHTIME:=1s}" ./authz/ ./token/ ./cache/ ./serve/
# What one new token costs on the file store at 100 and at 100,000 tokens.
go test -run '^$' -bench 'TokenWrite' -benchtime 200x ./filestore/

step "load: keyward vs an allow-everything ext_authz server"
# 10,000, 30,000 and 100,000 active tokens; 32 and 4 callers vs the floor.
bash scripts/load.sh -sweep -warmup 1s -duration "${LOADTIME:=4s}" -rounds 2

step "load through Envoy: added p99 of keyward vs the floor (prints MISS, never fails on it)"
if command -v wrk >/dev/null 2>&1; then
  bash scripts/envoyload.sh
else
  echo "no wrk (scripts/setup.sh installs it): skipped"
fi

step "tests (race detector, end to end through Envoy)"
go test -race -count=1 ./...
(cd deploy/kubernetes && go test -count=1 ./...)
# The Istio example (examples/istio, a module of its own: istio.io/api and
# the Gateway API stay out of keyward's binary), decoded strictly.
(cd examples/istio && go test -count=1 ./...)
# The container image (deploy/image, a module of its own): built with the
# Dockerfile's flags, assembled, and run as UID 65532 with no shell.
(cd deploy/image && go test -count=1 ./...)

step "the quickstart (the README's main command), checked"
out=$(bash scripts/quickstart.sh 2>&1) || { echo "$out"; echo "quickstart: FAILED"; exit 1; }
for want in "reply: Hello from the fake provider." "and with a bad token: 401" "the client token reached the provider: no" "quickstart engineering active kw_…"; do
  if ! grep -qF -- "$want" <<<"$out"; then
    echo "$out"; echo "quickstart: output lacks: $want"; exit 1
  fi
done
echo "quickstart: ok"
