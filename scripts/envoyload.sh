#!/usr/bin/env bash
# envoyload.sh runs scripts/load.sh to compare, through the
# real Envoy, three ways of serving one loopback upstream: Envoy without
# ext_authz, with ext_authz to an allow-everything floor, and with
# ext_authz to keyward. wrk drives each over 10,000 distinct tokens; the
# result is keyward's added p99 (keyward - none) over the floor's
# (floor - none), target <= 1.2. Loopback only; about a minute. Extra
# arguments go to the load test, e.g.
#
#   bash scripts/envoyload.sh -rounds 5 -duration 5s
#
# Needs wrk (scripts/setup.sh installs it) and Envoy (.tools/venv/bin/envoy,
# or $KEYWARD_ENVOY). Exit status: the load test's (0 whether or not the
# target was met; 3 for a miss under -strict; 1 the run failed).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

envoy="${KEYWARD_ENVOY:-}"
if [[ -z "$envoy" ]]; then
  envoy="$(command -v envoy || true)"
fi
envoy="${envoy:-.tools/venv/bin/envoy}"

exec bash scripts/load.sh -envoy "$envoy" -tokens 10000 -samples 10000 -callers 32 \
  -warmup 2s -duration 5s -rounds 3 "$@"
