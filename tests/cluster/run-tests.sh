#!/usr/bin/env bash
# run-tests.sh -- runs the cluster tests (tests/cluster.rs): a real two-node
# Pacemaker cluster live-migrates servers with ocf:vmshift:server. Builds the
# agent, brings the cluster lab up (tests/cluster/cluster.sh), runs the tests
# one at a time (they share the cluster), and tears the lab down again, also
# on failure or ^C. Extra arguments go to the test binary, e.g.
#   bash tests/cluster/run-tests.sh --nocapture           # show timings
#   VMSHIFT_SOAK_ROUNDS=50 bash tests/cluster/run-tests.sh round_trips --nocapture
# Needs root; `make cluster-test` calls it after installing the packages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cl="$here/cluster.sh"
trap 'bash "$cl" down' EXIT
trap 'exit 130' INT TERM
bash "$cl" down >/dev/null 2>&1 || true # leftovers of a killed run
cd "$here/../.."
cargo build --locked
bash "$cl" up
cargo test --locked --test cluster -- --ignored --test-threads=1 "$@"
