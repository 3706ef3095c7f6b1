#!/usr/bin/env bash
# run-tests.sh -- runs the lab tests (tests/lab.rs, tests/faults.rs) against real libvirtd and
# QEMU: brings the two-host lab up, runs the tests one at a time (they share
# the two libvirtds), and tears the lab down again, also on failure or ^C.
# The fault cases' results become RELIABILITY.md.
# Needs root; `make test` calls it after installing the packages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lab="$here/lab.sh"
trap 'bash "$lab" down' EXIT
trap 'exit 130' INT TERM
bash "$lab" down >/dev/null 2>&1 || true # leftovers of a killed run
bash "$lab" up
cd "$here/../.."
rm -rf target/reliability
rc=0
cargo test --test lab --test faults -- --ignored --test-threads=1 "$@" || rc=$?
bash "$here/reliability-report.sh"
exit $rc
