#!/usr/bin/env bash
# lab.sh -- two libvirt "hosts" (node-a, node-b) on ONE Linux machine, for real
# QEMU live-migration tests of vmshift. Self-contained (needs only this file
# and guest-init.c, common.sh next to it). Debian 12, root, no systemd needed; packages:
# tests/lab/install-deps.sh (libvirt 9.0 + QEMU 10.0 from bookworm-backports).
#
# WHAT `up` SETS UP (idempotent; a failure half-way tears everything down)
#   * network namespaces vs-a, vs-b; no link to the root namespace:
#       back-channel veth vs-a-bc <-> vs-b-bc  10.251.10.1/24 <-> 10.251.10.2/24
#       migration    veth vs-a-mn <-> vs-b-mn  10.251.11.1/24 <-> 10.251.11.2/24
#   * per node a private mount+UTS namespace: hostname node-a / node-b; /etc,
#     /var, /run are overlayfs copies (upper dirs in /tmp/vmshift-lab/<n>/ovl)
#     with a private /etc/hosts (node-a, node-b = back-channel; node-a.mn,
#     node-b.mn = migration link) and a libvirt-qemu user; /etc/libvirt,
#     /run/libvirt, /var/{lib,cache,log}/libvirt are bind mounts of fresh dirs
#     /tmp/vmshift-lab/<n>/fs/... Nothing is written to the real /etc, /var, /run
#     (except /run/netns/vs-{a,b}, made by `ip netns add`).
#   * one monolithic libvirtd per node: TCP 16509, auth none, distinct host_uuid,
#     keepalive 5x5; qemu.conf: root, no security driver/cgroups/namespaces,
#     stdio_handler=file. libvirtd is pinned to CPU $LAB_PIN_CPU (default 0,
#     empty = unpinned) so the QEMU capability cache (kept in the cache dir)
#     stays valid (this VM's vCPUs report different raw CPUID -> ~7 s re-probe).
#     Its parent is the node's holder shell, a child subreaper (subreaper.c):
#     the QEMUs libvirtd daemonizes are reaped the moment they exit, as on a
#     real host, not 1.2-1.8 s later by this machine's init.
#   * one sshd per node on both of its addresses (qemu+ssh, the agent's default
#     transport): root by key; host and client keys in the node's /etc/ssh (see
#     make_ssh in common.sh); the sshd binary is the machine's or one unpacked
#     from Debian's openssh-server into the cache dir.
#   * no guest, unless LAB_START_VM=1: then vs-vm1 is defined+started on node-a.
#
# GUEST  TCG (type='qemu'), no disk/NIC, Debian kernel (apt-get download, only
#   unpacked) + initramfs whose static /init (guest-init.c) dirties memory and
#   prints on ttyS0 -> /var/log/libvirt/qemu/NAME-serial.log inside the node:
#     lab-guest: start working_set=32MiB rate=20MiB/s acpi=1 input_devs=2
#     lab-guest tick=N mono=SEC.MSEC dirtied_mib=M        (once per second)
#     lab-guest: ACPI power button -> power off          (acpi=1)
#     lab-guest: ACPI power button ignored (lab_acpi=0)   (acpi=0)
#
# URIS (inside a node, via `exec`): qemu:///system = own libvirtd,
#   qemu+tcp://node-b/system = the peer; migration data URI tcp://node-b.mn.
#
# SUBCOMMANDS
#   up                      network + both libvirtds (LAB_START_VM=1: + vs-vm1 on A)
#   down [--purge]          idempotent; --purge also removes the cache dir
#   status                  one line per netns and per node; rc 1 unless all up
#   exec a|b CMD...         run CMD in the node's net+mount+uts namespaces (cwd kept)
#   xml NAME [acpi=0|1] [dirty_mb=N] [rate_mbs=N] [mem_mb=N] [disk=none|shared|local|nbd] [disk_mb=N] [disk_mbs=N] [os=lab|none]
#                           print domain XML; disk=shared (the default): a loop
#                           device both nodes see, disk=none: no disk,
#                           disk=local: an image file on each node's own
#                           /var/lib/libvirt, disk=nbd: an NBD export in the
#                           storage netns; the guest's write journal on it;
#                           disk_mb=N: a new image's size (4); disk_mbs=N: a
#                           guest writing hard (journal every ~10 ms, a bulk
#                           writer at N MiB/s); os=none: no kernel, the
#                           firmware halts (a running domain, idle)
#   disk NAME [a|b]         print the host path of NAME's disk image (the node's
#                           own for a local disk)
#   serial a|b NAME         print the host path of NAME's serial log on that node
#   libvirtd-pid a|b        print that node's libvirtd pid (rc 1 if not running)
#   qemu-pid a|b NAME       print NAME's qemu pid on that node (or nothing)
#   ra a|b ACTION [VAR=val...]  run heartbeat/VirtualDomain on the node (config
#                           /tmp/vmshift-lab/vs-vm1.xml, HA_RSCTMP in the state dir)
#   selftest                vs-vm1: start on A, live p2p migrate A->B->A, check ticks
#
# ENV  LAB_ID= LAB_NET=10.251 (a second lab: see below)
#      LAB_START_VM=0 LAB_PIN_CPU=0 LAB_DOMAIN_TYPE=qemu LAB_DIRTY_MB=32
#      LAB_RATE_MBS=20 LAB_MEM_MB=128 (defaults for `xml` and LAB_START_VM)
#
# down kills only the libvirtd, holder and sshd pids recorded in /tmp/vmshift-lab/pids
# (SIGCONT first, so a SIGSTOPped daemon dies too) and the qemu pids libvirt recorded in
# the nodes' /run/libvirt/qemu/*.pid (after checking /proc/PID/cmdline), then
# deletes vs-a, vs-b and /tmp/vmshift-lab. Never pkill/killall.
set -euo pipefail

# LAB_ID=x runs a second, independent lab next to the default one (the
# benchmark uses LAB_ID=bench): its own netns (vsx-a, vsx-b), state dir and
# addresses (LAB_NET, default 10.251). The guest cache is shared.
LAB_ID=${LAB_ID:-}
[[ "$LAB_ID" =~ ^[a-z0-9]{0,6}$ ]] || { echo "LAB_ID: up to 6 of [a-z0-9]" >&2; exit 2; }
NS=vs$LAB_ID
NET=${LAB_NET:-10.251}
L=/tmp/vmshift-lab${LAB_ID:+-$LAB_ID}
C=/tmp/vmshift-lab-cache
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
INIT_SRC=$HERE/guest-init.c
NODES=(a b)
VM=vs-vm1
GUEST_VER=v4 # bump to force a guest rebuild (guest-init.c changes do it anyway)
LAB_START_VM=${LAB_START_VM:-0}
LAB_DOMAIN_TYPE=${LAB_DOMAIN_TYPE:-qemu}
LAB_DIRTY_MB=${LAB_DIRTY_MB:-32}
LAB_RATE_MBS=${LAB_RATE_MBS:-20}
LAB_MEM_MB=${LAB_MEM_MB:-128}
LAB_PIN_CPU=${LAB_PIN_CPU-0}
VIRSH_TIMEOUT=20

USAGE="usage: $0 up | down [--purge] | status | exec a|b CMD... | xml NAME [acpi=0|1] [dirty_mb=N] [rate_mbs=N] [mem_mb=N] [disk=none|shared|local|nbd] [disk_mb=N] [disk_mbs=N] [os=lab|none] | disk NAME [a|b] | serial a|b NAME | libvirtd-pid a|b | qemu-pid a|b NAME | revive a|b | ra a|b ACTION [VAR=val...] | selftest"

ip_bc() { [ "$1" = a ] && echo "$NET.10.1" || echo "$NET.10.2"; }
ip_mn() { [ "$1" = a ] && echo "$NET.11.1" || echo "$NET.11.2"; }
uuid_of() { [ "$1" = a ] && echo 76730000-0000-4000-8000-00000000000a || echo 76730000-0000-4000-8000-00000000000b; }
log() { echo "[vmshift-lab] $*" >&2; }
die() { echo "[vmshift-lab] ERROR: $*" >&2; exit 1; }
usage() { echo "$USAGE" >&2; exit 2; }
ms() { echo $(($(date +%s%N) / 1000000)); }
check_node() { case "${1:-}" in a | b) ;; *) usage ;; esac; }
check_name() { [[ "${1:-}" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || usage; }
pidfile() { echo "$L/pids/libvirtd-$1.pid"; }
holder_pidfile() { echo "$L/pids/holder-$1.pid"; }
sshd_pidfile() { echo "$L/pids/sshd-$1.pid"; }
netns_exists() { [ -e "/run/netns/$NS-$1" ]; }
# cmdline of a recorded pid: libvirtd, or still the holder shell that forked
# it (node_run), or that holder
LV_RE='libvirtd|_node_init|_node_run'
# pid of node $1's libvirtd if it is alive (also when SIGSTOPped) and really ours
lv_pid() {
	local p
	p=$(cat "$(pidfile "$1")" 2>/dev/null) || return 1
	[ -n "$p" ] && running "$p" && grep -qaE "$LV_RE" "/proc/$p/cmdline" 2>/dev/null || return 1
	echo "$p"
}
# PID exists and is not a zombie (a zombie is dead enough: its parent reaps it)
running() { local st; st=$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
alive() { lv_pid "$1" >/dev/null; }
node_exec() {
	local n=$1 p wd=/
	shift
	# The node's namespaces are held by its libvirtd, or, while a test has
	# killed that, by any of the node's live QEMUs. The holder can exit
	# between finding it and entering it (a test's SIGTERM to libvirtd):
	# hold its namespace files open first, and look again if it is gone.
	local i net mnt uts
	for i in 1 2 3 4 5; do
		p=$(lv_pid "$n") || p=$(live_qemu "$n") || die "node-$n libvirtd not running (lab up?)"
		{ exec {net}<"/proc/$p/ns/net" {mnt}<"/proc/$p/ns/mnt" {uts}<"/proc/$p/ns/uts"; } 2>/dev/null && break
		[ "$i" -lt 5 ] || die "node-$n: its namespace holder pid $p vanished 5 times"
		sleep 0.1
	done
	[ -d "$PWD" ] && wd=$PWD
	nsenter --net="/proc/self/fd/$net" --mount="/proc/self/fd/$mnt" --uts="/proc/self/fd/$uts" --wd="$wd" -- "$@"
}
nvirsh() { local n=$1; shift; node_exec "$n" timeout "$VIRSH_TIMEOUT" virsh -q -c qemu:///system "$@"; }
serial_path() { echo "$L/$1/fs/var/log/libvirt/qemu/$2-serial.log"; }

# ---------------------------------------------------------------- guest image
GUEST_UUID_NS=vmshift-lab
# shellcheck source=common.sh
. "$HERE/common.sh"

# ---------------------------------------------------------------- node config
write_node_conf() {
	local n=$1 d="$L/$1/ovl" f="$L/$1/fs"
	mkdir -p "$d"/{etc,var,run}-{upper,work} "$f"/etc/libvirt/qemu "$f"/run/libvirt \
		"$f"/var/lib/libvirt "$f"/var/cache/libvirt "$f"/var/log/libvirt/qemu
	write_libvirt_conf "$f/etc/libvirt" "vmshift-lab node-$n (netns $NS-$n)" "$(uuid_of "$n")" 1
	install_pki "$n"
	cat >"$d/etc-upper/hosts" <<EOF
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
$NET.10.1 node-a
$NET.10.2 node-b
$NET.11.1 node-a.mn
$NET.11.2 node-b.mn
EOF
	echo "node-$n" >"$d/etc-upper/hostname"
	node_users "$d/etc-upper"
	install_ssh "$n"
}

# runs as: ip netns exec vs-<n> unshare -m -u --propagation private -- bash lab.sh _node_init <n>
node_init() {
	local n=$1 d="$L/$1/ovl" f="$L/$1/fs" x
	hostname "node-$n"
	# mount -n: libmount must not create /run/mount/utab in the real /run
	for x in etc var run; do
		mount -n -t overlay "$NS-$n-$x" -o "lowerdir=/$x,upperdir=$d/$x-upper,workdir=$d/$x-work" "/$x"
	done
	# libvirt's own dirs: fresh and private (hides any other libvirtd on the machine)
	for x in etc/libvirt run/libvirt var/lib/libvirt var/cache/libvirt var/log/libvirt; do
		mkdir -p "/$x" && mount -n --bind "$f/$x" "/$x"
	done
	node_run "$n"
}

# The node's holder shell, under $C/subreaper (the QEMUs libvirtd daemonizes
# are reparented to it and reaped at once: see subreaper.c): runs libvirtd,
# records its pid (the one tests signal) and waits for it.
node_run() {
	libvirtd -f /etc/libvirt/libvirtd.conf --listen -p /run/libvirt/vs-libvirtd.pid &
	echo $! >"$(pidfile "$1")"
	wait
}

# ---------------------------------------------------------------- up
net_up() {
	local n
	for n in "${NODES[@]}"; do
		netns_exists "$n" || ip netns add "$NS-$n"
		ip -n "$NS-$n" link set lo up
	done
	local l
	for l in bc mn; do
		if ! ip -n "$NS-a" link show "$NS-a-$l" >/dev/null 2>&1 || ! ip -n "$NS-b" link show "$NS-b-$l" >/dev/null 2>&1; then
			ip -n "$NS-a" link del "$NS-a-$l" 2>/dev/null || true
			ip -n "$NS-b" link del "$NS-b-$l" 2>/dev/null || true
			ip link add "$NS-a-$l" netns "$NS-a" type veth peer name "$NS-b-$l" netns "$NS-b"
		fi
	done
	node_addrs
}

node_start() {
	local n=$1
	if alive "$n"; then return 0; fi
	rm -rf "${L:?}/$n" # stale private dirs of a crashed run
	write_node_conf "$n"
	caps_seed "$n"
	mkdir -p "$L/pids"
	holder_start "$n" _node_init ip netns exec "$NS-$n" unshare -m -u --propagation private --
}

# holder_start N _node_init|_node_run ENTER...: node N's holder shell under
# $C/subreaper, in the namespaces ENTER... gives it (fresh ones for
# _node_init, which mounts the node's dirs; a live QEMU's for _node_run).
# setsid/taskset/ENTER/subreaper all exec(): $! is the holder's pid,
# node_run writes libvirtd's. fd 9 (the lock) and the caller's stdio are
# not inherited by the daemon.
holder_start() {
	local n=$1 how=$2 pin=()
	shift 2
	if [ -n "$LAB_PIN_CPU" ] && command -v taskset >/dev/null; then pin=(taskset -c "$LAB_PIN_CPU"); fi
	rm -f "$(pidfile "$n")"
	setsid "${pin[@]}" "$@" "$C/subreaper" bash "$SELF" "$how" "$n" >>"$L/$n/libvirtd.stdout" 2>&1 </dev/null 9<&- &
	echo $! >"$(holder_pidfile "$n")"
}

node_wait() {
	local n=$1 i p
	p=$(cat "$(holder_pidfile "$n")")
	for i in $(seq 1 600); do
		# Not alive(): we wrote this pid a moment ago, and until the forked
		# subshell has exec'd setsid its cmdline is still lab.sh's, which
		# alive() does not take for libvirtd (the "did not come up" flake).
		running "$p" || break
		if [ -S "$L/$n/fs/run/libvirt/libvirt-sock" ] && nvirsh "$n" version >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	cat "$L/$n/libvirtd.stdout" >&2 2>/dev/null || true
	die "node-$n libvirtd did not come up"
}


cmd_up() {
	local t0 n
	t0=$(ms)
	[ $# -eq 0 ] || usage
	up_checks libvirtd virsh qemu-system-x86_64 ip unshare nsenter setsid gcc python3 dpkg-deb apt-get timeout
	trap up_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mkdir -p "$L/pids"
	build_all
	net_up
	for n in "${NODES[@]}"; do node_start "$n"; done
	for n in "${NODES[@]}"; do node_wait "$n"; done
	for n in "${NODES[@]}"; do sshd_start "$n" "$(lv_pid "$n")" "$(sshd_pidfile "$n")"; done
	caps_keep
	node_exec a timeout "$VIRSH_TIMEOUT" virsh -q -c qemu+tcp://node-b/system version >/dev/null ||
		die "node-a cannot reach qemu+tcp://node-b/system"
	node_exec b timeout "$VIRSH_TIMEOUT" virsh -q -c qemu+tcp://node-a.mn/system version >/dev/null ||
		die "node-b cannot reach qemu+tcp://node-a.mn/system"
	node_exec a timeout "$VIRSH_TIMEOUT" virsh -q -c qemu+tls://node-b/system version >/dev/null ||
		die "node-a cannot reach qemu+tls://node-b/system"
	ssh_wait
	domain_xml "$VM" 1 "$LAB_DIRTY_MB" "$LAB_RATE_MBS" "$LAB_MEM_MB" 0 >"$L/$VM.xml" # for `ra`
	if [ "$LAB_START_VM" = 1 ] && ! nvirsh a domstate "$VM" 2>/dev/null | grep -qx running &&
		! nvirsh b domstate "$VM" 2>/dev/null | grep -qx running; then
		nvirsh a define "$L/$VM.xml" >/dev/null
		nvirsh a start "$VM" >/dev/null
		log "$VM started on node-a"
	fi
	trap - EXIT INT TERM
	log "up: node-a libvirtd pid $(lv_pid a), node-b libvirtd pid $(lv_pid b), $(($(ms) - t0)) ms"
}

# ---------------------------------------------------------------- down
# is_ours libvirtd|qemu:NAME PID : checks /proc/PID/cmdline
is_ours() {
	local c=/proc/$2/cmdline
	case "$1" in
	libvirtd) grep -qaE "$LV_RE" "$c" ;;
	sshd) grep -qa vmshift_lab_sshd_config "$c" ;;
	qemu:*) grep -qa qemu-system "$c" && grep -qaF "guest=${1#qemu:}," "$c" ;;
	*) return 1 ;;
	esac 2>/dev/null
}
# kill_pids libvirtd|qemu:NAME PID... : is_ours, CONT+TERM, wait <= 5 s, KILL
kill_pids() {
	local what=$1 p i live
	shift
	local todo=()
	for p in "$@"; do
		[ -n "$p" ] && running "$p" || continue # gone, or a zombie (empty cmdline)
		if ! is_ours "$what" "$p"; then
			log "pid $p is not '$what', not killing"
			continue
		fi
		todo+=("$p")
	done
	[ ${#todo[@]} -gt 0 ] || return 0
	kill -CONT "${todo[@]}" 2>/dev/null || true
	kill -TERM "${todo[@]}" 2>/dev/null || true
	for i in $(seq 1 50); do
		live=()
		for p in "${todo[@]}"; do running "$p" && live+=("$p"); done
		[ ${#live[@]} -gt 0 ] || return 0
		sleep 0.1
	done
	log "pids ${live[*]} ignored SIGTERM: SIGKILL"
	kill -KILL "${live[@]}" 2>/dev/null || true
}

qemu_pids() { # node -> "name pid" lines from libvirt's pid files
	local f
	for f in "$L/$1"/fs/run/libvirt/qemu/*.pid; do
		[ -f "$f" ] || continue
		[ "${f##*/}" != driver.pid ] || continue # libvirtd's own lock file
		echo "$(basename "$f" .pid) $(cat "$f" 2>/dev/null || true)"
	done
}

cmd_down() {
	local n p name purge=0 t0
	t0=$(ms)
	case "${1:-}" in "") ;; --purge) purge=1 ;; *) usage ;; esac
	# a SIGSTOPped libvirtd would hang every virsh call: wake it up first
	for n in "${NODES[@]}"; do p=$(lv_pid "$n") && kill -CONT "$p" 2>/dev/null || true; done
	# qemus and libvirtds in parallel (SIGTERM to qemu is what `virsh destroy`
	# does; libvirtd is not asked, so a hung daemon cannot block down), then
	# once more for a qemu a daemon may have spawned meanwhile
	local lvp=() pass
	for n in "${NODES[@]}"; do p=$(lv_pid "$n") && lvp+=("$p"); done
	for pass in 1 2; do
		for n in "${NODES[@]}"; do
			while read -r name p; do
				[ -n "${p:-}" ] || continue
				kill_pids "qemu:$name" "$p" &
			done < <(qemu_pids "$n")
		done
		[ $pass = 2 ] || [ ${#lvp[@]} -eq 0 ] || kill_pids libvirtd "${lvp[@]}" &
		wait
	done
	for n in "${NODES[@]}"; do kill_pids sshd "$(cat "$(sshd_pidfile "$n")" 2>/dev/null)"; done
	# the holders end with their libvirtd; one that has not yet is told to
	for n in "${NODES[@]}"; do kill_pids libvirtd "$(cat "$(holder_pidfile "$n")" 2>/dev/null)"; done
	netns_release "${NODES[@]/#/$NS-}"
	disks_down
	rm -rf "${L:?}"
	[ $purge = 0 ] || rm -rf "${C:?}"
	log "down: done in $(($(ms) - t0)) ms"
}

# ---------------------------------------------------------------- status
cmd_status() {
	local n rc=0 p doms
	for n in "${NODES[@]}"; do
		if netns_exists "$n"; then
			echo "netns $NS-$n: $(ip -n "$NS-$n" -br addr | awk -v p="^$NS-" '$0 ~ p{sub(/@.*/,"",$1); print $1"="$3}' | xargs)"
		else
			echo "netns $NS-$n: absent"; rc=1
		fi
	done
	for n in "${NODES[@]}"; do
		if p=$(lv_pid "$n"); then
			if [ "$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$p/stat" 2>/dev/null)" = T ]; then
				echo "node-$n: libvirtd pid $p, STOPPED"; rc=1
			elif doms=$(VIRSH_TIMEOUT=5 nvirsh "$n" list --all 2>/dev/null); then
				echo "node-$n: libvirtd pid $p, domains: $(echo "$doms" | awk 'NF{s=$3; for(i=4;i<=NF;i++) s=s"_"$i; printf "%s:%s ", $2, s}' | xargs)"
			else
				echo "node-$n: libvirtd pid $p, NOT RESPONDING"; rc=1
			fi
		else
			echo "node-$n: libvirtd not running"; rc=1
		fi
	done
	return $rc
}

# ---------------------------------------------------------------- selftest
last_tick() { grep -ao 'lab-guest tick=[0-9]*' "$1" 2>/dev/null | tail -1 | cut -d= -f2; }
wait_tick_after() { # serial-file min-tick timeout-s -> prints the tick
	local f=$1 min=$2 i t
	for i in $(seq 1 $(($3 * 10))); do
		t=$(last_tick "$f")
		if [ -n "$t" ] && [ "$t" -gt "$min" ]; then echo "$t"; return 0; fi
		sleep 0.1
	done
	return 1
}
selftest_clean() {
	local n
	for n in "${NODES[@]}"; do
		nvirsh "$n" destroy "$VM" >/dev/null 2>&1 || true
		nvirsh "$n" undefine "$VM" >/dev/null 2>&1 || true
	done
}
st_mig() { # from to
	local s=$1 t=$2 t0 tk
	t0=$(ms)
	node_exec "$s" timeout 120 virsh -q -c qemu:///system migrate --live --p2p --persistent \
		"$VM" "qemu+tcp://node-$t/system" "tcp://node-$t.mn" || die "migrate $s->$t failed"
	echo "selftest: migrated node-$s -> node-$t in $(($(ms) - t0)) ms;" \
		"$(nvirsh "$t" domjobinfo --completed "$VM" 2>/dev/null | awk -F: '/Total downtime/{gsub(/ +/," ",$2); print "downtime" $2}')"
	nvirsh "$t" domstate "$VM" | grep -qx running || die "$VM not running on node-$t"
	nvirsh "$s" domstate "$VM" | grep -qx 'shut off' || die "$VM not shut off on node-$s"
	tk=$(last_tick "$(serial_path "$s" "$VM")")
	tk=$(wait_tick_after "$(serial_path "$t" "$VM")" "${tk:-0}" 15) || die "no new tick on node-$t after migration"
	echo "selftest: guest ticking on node-$t (tick $tk)"
}
cmd_selftest() {
	local t0 tk sa sb starts
	[ $# -eq 0 ] || usage
	t0=$(ms)
	alive a && alive b || die "lab is not up"
	selftest_clean
	rm -f "$(serial_path a "$VM")" "$(serial_path b "$VM")"
	trap 'selftest_clean' EXIT
	cmd_xml "$VM" >"$L/$VM.xml"
	nvirsh a define "$L/$VM.xml" >/dev/null
	nvirsh a start "$VM" >/dev/null
	sa=$(serial_path a "$VM") sb=$(serial_path b "$VM")
	tk=$(wait_tick_after "$sa" 0 30) || die "no heartbeat from $VM on node-a within 30 s"
	echo "selftest: $VM started on node-a, tick $tk after $(($(ms) - t0)) ms"
	st_mig a b
	st_mig b a
	starts=$(cat "$sa" "$sb" | grep -ac 'lab-guest: start' || true)
	[ "$starts" = 1 ] || die "guest booted $starts times (expected 1)"
	! grep -aqE 'BUG|Oops|panic' "$sa" "$sb" || die "kernel BUG/Oops/panic in the serial logs"
	selftest_clean
	trap - EXIT
	nvirsh a dominfo "$VM" >/dev/null 2>&1 && die "$VM still defined on node-a"
	nvirsh b dominfo "$VM" >/dev/null 2>&1 && die "$VM still defined on node-b"
	echo "selftest: OK in $(($(ms) - t0)) ms"
}

# ---------------------------------------------------------------- ra
# resource-agents' VirtualDomain run "on" a node with the lab's parameters;
# extra VAR=val (e.g. OCF_RESKEY_CRM_meta_migrate_target=node-b) may follow.
cmd_ra() {
	local n=${1:-} act=${2:-}
	check_node "$n"
	[ -n "$act" ] || usage
	shift 2
	mkdir -p "$L/rsctmp-$n"
	node_exec "$n" env OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE="$VM-rsc" \
		HA_RSCTMP="$L/rsctmp-$n" HA_LOGFACILITY=none \
		OCF_RESKEY_config="$L/$VM.xml" OCF_RESKEY_hypervisor=qemu:///system \
		OCF_RESKEY_migration_transport=tcp OCF_RESKEY_migration_network_suffix=.mn \
		OCF_RESKEY_CRM_meta_timeout=30000 "$@" \
		/usr/lib/ocf/resource.d/heartbeat/VirtualDomain "$act"
}

live_qemu() { # node -> pid of one live QEMU guest of that node
	local name p
	while read -r name p; do
		if [ -n "$p" ] && is_ours "qemu:$name" "$p"; then echo "$p"; return 0; fi
	done < <(qemu_pids "$1")
	return 1
}
# revive: restart a node's libvirtd that died (tests kill it on purpose)
# without wiping the node: libvirt then finds its running guests again from
# the pid and status files it keeps in /run/libvirt/qemu. The daemon is
# started in the mount namespace of one of the node's live QEMUs (the node's
# "host" still exists there); with no live guest, a fresh node_init is fine.
cmd_revive() {
	local n=$1 q
	if alive "$n"; then return 0; fi
	q=$(live_qemu "$n") || true
	if [ -n "$q" ]; then
		holder_start "$n" _node_run nsenter -t "$q" -n -m -u --
	else
		holder_start "$n" _node_init ip netns exec "$NS-$n" unshare -m -u --propagation private --
	fi
	node_wait "$n"
	log "revive: node-$n libvirtd pid $(lv_pid "$n")"
}
# the subcommands only this lab has (common.sh's dispatch answers the rest)
lab_cmd() {
	local cmd=$1 p
	shift
	case "$cmd" in
	libvirtd-pid) [ $# -eq 1 ] || usage; check_node "$1"; lv_pid "$1" || { log "node-$1 libvirtd not running"; exit 1; } ;;
	qemu-pid)
		[ $# -eq 2 ] || usage; check_node "$1"; check_name "$2"
		p=$(cat "$L/$1/fs/run/libvirt/qemu/$2.pid" 2>/dev/null || true)
		if [ -n "$p" ] && is_ours "qemu:$2" "$p"; then echo "$p"; fi
		;;
	revive) [ $# -eq 1 ] || usage; check_node "$1"; lock; cmd_revive "$1" ;;
	ra) cmd_ra "$@" ;;
	_node_run) node_run "$1" ;;
	selftest) cmd_selftest "$@" ;;
	*) usage ;;
	esac
}

dispatch "$@"
