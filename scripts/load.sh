#!/usr/bin/env bash
# load.sh builds keyward and its load test and runs the load test: keyward
# serve against an allow-everything ext_authz floor, with a generated store
# of 100,000 tokens. Extra arguments go to the load test, e.g.
#
#   bash scripts/load.sh -duration 5s
#   bash scripts/load.sh -concurrency 64 -conns 2 -strict
#   bash scripts/load.sh -sweep    # 10k/30k/100k active tokens; 32 and 4 callers vs the floor; CPU and RSS
#
# Exit status is the load test's: 0 run worked (targets met or not), 3 a
# target missed under -strict, 1 the run failed, 2 bad flags.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="$(mktemp -d "${TMPDIR:-/tmp}/keyward-load-bin.XXXXXX")"
trap 'rm -rf "$bin"' EXIT

go build -o "$bin/keyward" ./cmd/keyward
go build -o "$bin/loadtest" ./internal/cmd/loadtest

# Not exec: the trap removes the binaries once the load test is done.
"$bin/loadtest" -keyward "$bin/keyward" "$@"
