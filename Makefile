# vmshift -- `make demo` and `make test` work on a fresh Debian 12 machine,
# as root: both install what they need first (tests/lab/install-deps.sh).

CARGO ?= cargo

.PHONY: all build deps demo demo-cluster test unit-test lab-test package-test storage-test cluster-test \
	cluster-soak deb rpm lab-up lab-down cluster-up cluster-down clean bench bench-quick

all: build

deps:
	bash tests/lab/install-deps.sh

build: deps
	$(CARGO) build --locked

# The main job on the built-in two-host lab.
demo: build
	bash tests/lab/demo.sh

# A real two-node Pacemaker cluster live-migrates a server with vmshift.
demo-cluster: build
	bash tests/cluster/demo.sh

# Every test: unit and black-box tests, the packages (built, installed,
# checked with ocf-tester, purged), the lab tests on real libvirtd and QEMU
# (lifecycle, migration, fault injection), then the Pacemaker cluster tests,
# and the benchmark's quick mode (so it cannot rot).
test: unit-test package-test lab-test cluster-test bench-quick

unit-test: build
	$(CARGO) test --locked

lab-test: build
	bash tests/lab/run-tests.sh

# The storage lab tests alone (shared block, network, local copied disks,
# refused layouts, a disk missing on the target), each with the guest's
# write journal checked; lab-test runs them too, so `make test` does.
storage-test: build
	bash tests/lab/run-tests.sh --storage

cluster-test: build
	bash tests/cluster/run-tests.sh

# 50 round trips under Pacemaker (not part of `make test`).
cluster-soak: build
	VMSHIFT_SOAK_ROUNDS=$${VMSHIFT_SOAK_ROUNDS:-50} bash tests/cluster/run-tests.sh round_trips --nocapture

# vmshift against VirtualDomain on a second lab (LAB_ID=bench), ~14 min:
# target/bench/report.{json,md} and *.svg; then 10 Pacemaker moves per agent
# on the cluster lab, ~2 min: target/bench/cluster_move.json. Not part of
# `make test`. BENCH_PUBLISH=tests/bench/results also copies the reports
# there (committed).
bench: deps
	$(CARGO) build --release --locked
	python3 tests/bench/bench.py $(if $(BENCH_PUBLISH),--publish $(BENCH_PUBLISH))
	python3 tests/bench/cluster_move.py
	$(if $(BENCH_PUBLISH),cp target/bench/cluster_move.json $(BENCH_PUBLISH)/)

# A few minutes: every number once, into target/bench-quick/; fails only
# when a number is missing, never on a missed target.
bench-quick: deps
	$(CARGO) build --release --locked
	python3 tests/bench/bench.py --quick

package-test: build
	bash tests/packaging/check.sh

# target/package/vmshift_<version>_<arch>.deb and vmshift-<version>-1.x86_64.rpm
deb: deps
	bash packaging/build.sh deb

rpm: deps
	bash packaging/build.sh rpm

lab-up: deps
	bash tests/lab/lab.sh up

lab-down:
	bash tests/lab/lab.sh down

cluster-up: build
	bash tests/cluster/cluster.sh up

cluster-down:
	bash tests/cluster/cluster.sh down

clean:
	$(CARGO) clean
