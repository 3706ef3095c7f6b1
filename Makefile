# vmshift -- `make demo` and `make test` work on a fresh Debian 12 machine,
# as root: both install what they need first (tests/lab/install-deps.sh).

CARGO ?= cargo

.PHONY: all build deps demo test unit-test lab-test package-test deb rpm lab-up lab-down clean

all: build

deps:
	bash tests/lab/install-deps.sh

build: deps
	$(CARGO) build --locked

# The main job on the built-in two-host lab.
demo: build
	bash tests/lab/demo.sh

# Every test: unit and black-box tests, the packages (built, installed,
# checked with ocf-tester, purged), then the lab tests on real libvirtd and
# QEMU.
test: unit-test package-test lab-test

unit-test: build
	$(CARGO) test --locked

lab-test: build
	bash tests/lab/run-tests.sh

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

clean:
	$(CARGO) clean
