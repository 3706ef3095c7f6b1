#!/usr/bin/env bash
# check.sh -- the packages as an admin gets them: builds the .deb and the
# .rpm, installs the .deb on this machine, checks what Pacemaker sees
# (crm_resource --show-metadata) and runs ocf-tester against the installed
# /usr/lib/ocf/resource.d/vmshift/server on a lab node with a real QEMU
# guest, then purges the package and checks that nothing is left. The .rpm's
# file list is checked with rpm -qlp. Needs root (make test runs it).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
lab=tests/lab/lab.sh
ocf=/usr/lib/ocf/resource.d/vmshift/server
passed=0 failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAILED: $*"; failed=$((failed + 1)); }
check() { # description command...
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}

if dpkg-query -W -f='${Status}' vmshift 2>/dev/null | grep -q installed || [ -e "$ocf" ]; then
	echo "check.sh: vmshift is already installed here ($ocf); remove it first" >&2
	exit 1
fi

deb=$(bash packaging/build.sh deb | tail -1)
rpm=$(bash packaging/build.sh rpm | tail -1)
files=(/usr/sbin/vmshift "$ocf" /usr/share/man/man8/vmshift.8.gz
	/usr/share/doc/vmshift/README.md /usr/share/doc/vmshift/copyright)

cleanup() {
	dpkg --purge vmshift >/dev/null 2>&1 || true
	bash "$lab" down >/dev/null 2>&1 || true
	rm -f /tmp/vmshift-pkg-vm.xml
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The .rpm: the same files.
rpm_list=$(rpm -qlp "$rpm" 2>/dev/null)
for f in "${files[@]}"; do
	check "rpm holds $f" grep -qx "$f" <<<"$rpm_list"
done
check "rpm requires the libvirt client library" grep -qx libvirt-libs <<<"$(rpm -qRp "$rpm" 2>/dev/null)"

# The .deb, installed.
check "dpkg -i $deb" dpkg -i "$deb"
for f in "${files[@]}"; do
	check "installed $f" test -e "$f"
done
check "the OCF entry runs the installed binary" test "$(readlink -f "$ocf")" = /usr/sbin/vmshift
check "deb depends on libvirt0" grep -q 'libvirt0' <<<"$(dpkg-query -W -f='${Depends}' vmshift)"
check "man page renders" bash -c 'zcat /usr/share/man/man8/vmshift.8.gz | grep -q "^.SH \"EXIT STATUS\""'
meta=$(crm_resource --show-metadata ocf:vmshift:server 2>/dev/null || true)
check "crm_resource --show-metadata ocf:vmshift:server is the meta-data" \
	test "$meta" = "$(cat ocf-metadata.xml)"

# ocf-tester against the installed agent, with a real guest on a lab node.
bash "$lab" down >/dev/null 2>&1 || true
bash "$lab" up
bash "$lab" xml pkg-vm1 acpi=1 >/tmp/vmshift-pkg-vm.xml
chmod 644 /tmp/vmshift-pkg-vm.xml
if out=$(bash "$lab" exec a env HA_LOGFACILITY=none timeout 300 ocf-tester -v -n pkg-vm1 \
	-o name=pkg-vm1 -o config=/tmp/vmshift-pkg-vm.xml "$ocf" 2>&1) &&
	grep -q "passed all tests" <<<"$out"; then
	ok "ocf-tester passes against $ocf on node-a"
else
	echo "$out" | tail -30
	bad "ocf-tester passes against $ocf on node-a"
fi
bash "$lab" exec a virsh -q -c qemu:///system undefine pkg-vm1 >/dev/null 2>&1 || true
bash "$lab" down

# Removal leaves nothing behind.
check "dpkg --purge vmshift" dpkg --purge vmshift
for f in "${files[@]}" /usr/lib/ocf/resource.d/vmshift /usr/share/doc/vmshift; do
	check "removed $f" test ! -e "$f" -a ! -L "$f"
done
check "dpkg forgot vmshift" bash -c '! dpkg-query -W vmshift >/dev/null 2>&1'

echo
echo "packaging: $passed passed, $failed failed"
[ "$failed" = 0 ]
