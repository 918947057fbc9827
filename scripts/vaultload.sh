#!/usr/bin/env bash
# vaultload.sh runs the sweep of scripts/load.sh with keyward on the Vault
# store: an OpenBao dev server (in memory, loopback only) filled with
# 100,000 tokens, 1,000 groups and 1,000 users, which keyward loads lazily
# into its caches as in production; the sweep's pre-warm pass loads every
# token once, so the figures are those of warm caches. Extra arguments go
# to the load test, e.g.
#
#   bash scripts/vaultload.sh -rounds 3 -duration 10s
#
# Needs bao (scripts/setup.sh installs it into .tools/venv; or
# $KEYWARD_BAO). Exit status: the load test's (0 whether or not the targets
# were met; 3 for a miss under -strict; 1 the run failed).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bao="${KEYWARD_BAO:-}"
if [[ -z "$bao" ]]; then
  bao="$(command -v bao || true)"
fi
bao="${bao:-.tools/venv/bin/bao}"

exec bash scripts/load.sh -vault "$bao" -sweep "$@"
