#!/usr/bin/env bash
# scale.sh builds keyward and its scale test and runs the scale test:
# keyward serve started on generated file stores of growing size (10^4,
# 10^5 and 10^6 tokens by default, with a tenth as many groups and users),
# timed from exec to health SERVING, with its peak and steady memory.
# Extra arguments go to the scale test, e.g.
#
#   bash scripts/scale.sh -sizes 10000,100000
#   bash scripts/scale.sh -strict
#
# Exit status is the scale test's: 0 runs worked (targets met or not), 3 a
# target missed under -strict, 1 a run failed, 2 bad flags.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="$(mktemp -d "${TMPDIR:-/tmp}/keyward-scale-bin.XXXXXX")"
trap 'rm -rf "$bin"' EXIT

go build -o "$bin/keyward" ./cmd/keyward
go build -o "$bin/scaletest" ./internal/cmd/scaletest

# Not exec: the trap removes the binaries once the scale test is done.
"$bin/scaletest" -keyward "$bin/keyward" "$@"
