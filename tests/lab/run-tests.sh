#!/usr/bin/env bash
# run-tests.sh -- runs the lab tests (tests/lab.rs, tests/faults.rs) against real libvirtd and
# QEMU: brings the two-host lab up, runs the tests one at a time (they share
# the two libvirtds), and tears the lab down again, also on failure or ^C.
# The fault cases' results become RELIABILITY.md.
# `--storage` runs only the storage tests (`make storage-test`).
# Needs root; `make test` calls it after installing the packages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lab="$here/lab.sh"
trap 'bash "$lab" down' EXIT
trap 'exit 130' INT TERM
bash "$lab" down >/dev/null 2>&1 || true # leftovers of a killed run
bash "$lab" up
cd "$here/../.."
rc=0
if [ "${1:-}" = --storage ]; then
	# `make storage-test`: the storage tests alone (every lab test with a
	# disk has "disk" in its name); no fault cases, so no RELIABILITY.md.
	shift
	cargo test --test lab -- --ignored --test-threads=1 disk "$@" || rc=$?
	exit $rc
fi
rm -rf target/reliability
cargo test --test lab --test faults -- --ignored --test-threads=1 "$@" || rc=$?
bash "$here/reliability-report.sh"
exit $rc
