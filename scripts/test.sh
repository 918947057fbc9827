#!/usr/bin/env bash
# Runs every keyward test on a fresh machine: installs what it needs
# (scripts/setup.sh), checks formatting and lints, runs all Go tests with
# the race detector (unit, fuzz seeds, and end-to-end through the real Envoy
# with the official SDKs), the container image's tests, a short fuzzing pass
# over every parser, the benchmarks, the load comparison against an
# allow-everything server, start-up on large file stores, and the
# quickstart with its output checked.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh

export PATH="$root/.tools/venv/bin:$root/.tools/bin:$PATH"
export KEYWARD_PYTHON="$root/.tools/venv/bin/python"
export KEYWARD_REQUIRE_E2E=1 # missing Envoy or SDKs fail the run instead of skipping

step() { printf '\n== %s\n' "$*"; }

step "gofmt, go mod tidy, go vet, staticcheck"
unformatted=$(gofmt -l .)
if [[ -n "$unformatted" ]]; then
  echo "not gofmt-ed:"; echo "$unformatted"; exit 1
fi
# keyward's module, and the test modules that keep integration-only
# dependencies (k8s.io/api, go-containerregistry, Istio's API types) out of
# keyward's binary. They import keyward through a replace directive, so a
# dependency bumped in keyward's go.mod must be tidied into theirs too.
for module in . deploy/kubernetes deploy/image examples/istio; do
  if ! diff=$(cd "$module" && go mod tidy -diff); then
    echo "$diff"; echo "$module: go.mod/go.sum not tidy: run (cd $module && go mod tidy)"; exit 1
  fi
  (cd "$module" && go vet ./... && staticcheck ./...)
done

# An execution count, not a duration: Go 1.26's fuzz coordinator can report
# "context deadline exceeded" at a -fuzztime deadline without any finding
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
# Targets named Fuzz...Live drive real I/O (every execution costs real
# requests, the Vault store's names against an OpenBao dev server, or writes
# a whole file store to disk), so they
# get a smaller count, still above their seed corpus (about 150 inputs) so
# that the mutator runs: the file store's costs about 0.1 s an execution
# under the fuzzer's instrumentation (it rereads the whole store after
# every operation to diff it), so 1000 executions are two minutes of it.
step "fuzzing every parser (${FUZZTIME:=20000x} each; Fuzz...Live targets ${LIVE_FUZZTIME:=1000x})"
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
# The store file's load at 10,000 and 100,000 records: the time per record
# must not grow with the file.
go test -run '^$' -bench 'StoreFileLoad' -benchtime 3x ./filestore/

step "load: keyward vs an allow-everything ext_authz server"
# 10,000, 30,000 and 100,000 active tokens; 32 and 4 callers vs the floor.
bash scripts/load.sh -sweep -warmup 1s -duration "${LOADTIME:=4s}" -rounds 2

# The same on the Vault store (an OpenBao dev server holding 100,000
# tokens, read lazily): filling it takes about 70 s. At the default
# cache.ttl of 30 s, 100,000 active tokens are 3,300 Vault reads a second.
step "load on the Vault store: keyward vs the floor (prints MISS, never fails on it)"
bash scripts/vaultload.sh -warmup 1s -duration "${LOADTIME}" -rounds 1

step "load through Envoy: added p99 of keyward vs the floor (prints MISS, never fails on it)"
if command -v wrk >/dev/null 2>&1; then
  bash scripts/envoyload.sh
else
  echo "no wrk (scripts/setup.sh installs it): skipped"
fi

# 10^4, 10^5 and 10^6 tokens, with a tenth as many groups and users: 48 s
# on the quiet 2-core machine, 75 s at load 5, 90 s at load 8, most of it
# generating the 10^6-token store (SCALESIZES=10000,100000 skips it).
# Misses are printed, not failed, as in the load step.
step "scale: keyward start-up on file stores of growing size"
bash scripts/scale.sh -sizes "${SCALESIZES:=10000,100000,1000000}"

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
