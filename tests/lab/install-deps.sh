#!/usr/bin/env bash
# install-deps.sh -- installs, when missing, every Debian package the build,
# the lab and the tests need (Debian 12 bookworm, run as root). Idempotent:
# a machine that already has everything is left alone in well under a second.
#
# QEMU comes from bookworm-backports (10.0): bookworm's QEMU 7.2 corrupts TCG
# guests after auto-converge or a retried migration. It is installed with
# --no-install-recommends (otherwise apt drags in mesa/vulkan from backports),
# and the backports source is given to apt for this one call only, so nothing
# is written under /etc/apt.
#
# openssh-server is not installed: that would enable an sshd on the machine
# itself. The labs run their own sshd per node, unpacked from the package
# into their cache dir (common.sh: find_sshd).
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "install-deps: must run as root" >&2; exit 1; }

PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
	resource-agents pacemaker pacemaker-cli-utils corosync libxml2-utils iproute2
	util-linux gcc libc6-dev python3 cpio rpm openssl strace openssh-client)
BPO_PKGS=(qemu-system-x86 qemu-utils)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
qemu_ok=0
if dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | grep -q '^1:10\.'; then qemu_ok=1; fi

if [ ${#missing[@]} -eq 0 ] && [ $qemu_ok = 1 ]; then exit 0; fi

export DEBIAN_FRONTEND=noninteractive
bpo=$(mktemp)
trap 'rm -f "$bpo"' EXIT
{
	echo "deb http://deb.debian.org/debian bookworm main"
	echo "deb http://deb.debian.org/debian bookworm-updates main"
	echo "deb http://deb.debian.org/debian-security bookworm-security main"
	echo "deb http://deb.debian.org/debian bookworm-backports main"
} >"$bpo"
APT=(apt-get -q -o Dir::Etc::sourcelist="$bpo" -o Dir::Etc::sourceparts=/nonexistent)
[ $qemu_ok = 1 ] || missing+=("${BPO_PKGS[@]/%/ (bookworm-backports)}")
echo "install-deps: installing ${missing[*]}" >&2
"${APT[@]}" update >/dev/null
plain=()
for p in "${missing[@]}"; do [[ "$p" == *backports* ]] || plain+=("$p"); done
if [ ${#plain[@]} -gt 0 ]; then
	"${APT[@]}" install -y --no-install-recommends "${plain[@]}" >/dev/null
fi
if [ $qemu_ok = 0 ]; then
	"${APT[@]}" install -y --no-install-recommends -t bookworm-backports "${BPO_PKGS[@]}" >/dev/null
fi
echo "install-deps: done ($(qemu-system-x86_64 --version | head -1))" >&2
