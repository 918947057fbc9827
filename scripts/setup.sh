#!/usr/bin/env bash
# Installs what keyward's scripts need into .tools/ (idempotent, cached):
# Go modules, a Python venv with the real Envoy binary and the official
# OpenAI/Anthropic SDKs, staticcheck, and Envoy Gateway's egctl. Nothing
# outside the repository except Go's module and build caches.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

go mod download
(cd deploy/kubernetes && go mod download) # the manifests' test module

req=scripts/requirements.txt
stamp="$tools/venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -x "$tools/venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup: installing $(grep -v '^#' "$req" | tr '\n' ' ')into .tools/venv" >&2
  rm -rf "$tools/venv"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi

staticcheck_version=v0.8.2
if [[ ! -x "$tools/bin/staticcheck" || "$(cat "$tools/bin/.staticcheck" 2>/dev/null)" != "$staticcheck_version" ]]; then
  GOBIN="$tools/bin" go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
  echo "$staticcheck_version" >"$tools/bin/.staticcheck"
fi

# egctl translates the Envoy Gateway example offline for e2e's
# TestEnvoyGateway; it is a large build, so it is cached like staticcheck.
egctl_version=v1.9.1
if [[ ! -x "$tools/bin/egctl" || "$(cat "$tools/bin/.egctl" 2>/dev/null)" != "$egctl_version" ]]; then
  echo "setup: installing egctl $egctl_version into .tools/bin (a large build)" >&2
  GOBIN="$tools/bin" go install "github.com/envoyproxy/gateway/cmd/egctl@$egctl_version"
  echo "$egctl_version" >"$tools/bin/.egctl"
fi

# wrk drives Envoy in scripts/envoyload.sh (a Debian package; we run as
# root in CI). A missing wrk only skips that comparison.
if ! command -v wrk >/dev/null 2>&1; then
  echo "setup: installing wrk (apt-get)" >&2
  apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends wrk >/dev/null 2>&1; } ||
    echo "setup: could not install wrk; scripts/envoyload.sh needs it" >&2
fi
