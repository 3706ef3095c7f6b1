#!/usr/bin/env bash
# run-tests.sh -- runs the cluster tests (tests/cluster.rs): a real two-node
# Pacemaker cluster live-migrates servers with ocf:vmshift:server, then a
# three-node one (the three_nodes_* tests). Builds the
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
# Filters (arguments not starting with -) pick the tests; those named
# three_nodes_* run on a three-node cluster brought up after the others.
flags=() two=() three=()
for a in "$@"; do
	case $a in
	-*) flags+=("$a") ;;
	three_nodes*) three+=("$a") ;;
	*) two+=("$a") ;;
	esac
done
all=$(($# == ${#flags[@]}))
run() { cargo test --locked --test cluster -- --ignored --test-threads=1 "$@" ${flags[@]+"${flags[@]}"}; }
if [ $all = 1 ] || [ ${#two[@]} -gt 0 ]; then
	bash "$cl" up
	run --skip three_nodes_ ${two[@]+"${two[@]}"}
fi
if [ $all = 1 ] || [ ${#three[@]} -gt 0 ]; then
	bash "$cl" down
	VC_NODES="a b c" bash "$cl" up
	if [ ${#three[@]} -gt 0 ]; then run "${three[@]}"; else run three_nodes_; fi
fi
