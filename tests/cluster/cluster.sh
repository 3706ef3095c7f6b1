#!/usr/bin/env bash
# cluster.sh -- a two-node (or, with VC_NODES="a b c", three-node)
# Pacemaker/Corosync cluster whose nodes are also libvirt/QEMU hosts, all on
# ONE Linux machine: vmshift (ocf:vmshift:server)
# live-migrates a real QEMU guest under Pacemaker (migrate_to on the source,
# migrate_from on the target). Self-contained: needs only this file and
# ../lab/guest-init.c and ../lab/common.sh (the guest of the project lab). Debian 12, root, no
# systemd; packages: tests/lab/install-deps.sh. Prefix "vc-" everywhere, so it
# runs beside the project lab (tests/lab/lab.sh, prefix "vs-").
#
# WHAT `up` SETS UP (a failure half-way tears everything down again)
#   * network namespaces vc-a, vc-b (vc-c) (no link to the root namespace),
#     each joined to a switch namespace vc-sw by two veths, one per bridge:
#       back-channel vc-X-bc -> bridge sw-bc  10.253.0.1/24, .0.2, (.0.3)
#         (corosync knet ring0, libvirt qemu+tcp://node-X/system)
#       migration    vc-X-mn -> bridge sw-mn  10.253.1.1/24, .1.2, (.1.3)
#         (names node-X.mn: vmshift's migration network)
#   * per node one "holder" process (started under env -i: setsid ip netns exec
#     vc-X unshare -m -u -- bash cluster.sh _node_init X) with a private mount
#     and UTS namespace: hostname node-a / node-b (= corosync/Pacemaker node
#     names); overlayfs on /etc and /var (upper dirs in the state dir) with a
#     private /etc/hosts (node-a, node-b = back-channel, node-a.mn, node-b.mn =
#     migration link) and a libvirt-qemu user; private tmpfs on /run and
#     /dev/shm (libqb IPC: abstract sockets are per netns, ring buffers live in
#     /dev/shm); fresh bind-mounted dirs over /etc/libvirt, /run/libvirt,
#     /var/{lib,cache,log}/libvirt, /etc/corosync, /var/{lib,log}/corosync,
#     /var/{lib,log}/pacemaker. Inside it: libvirtd (TCP 16509, auth none;
#     TLS 16514 with the lab CA's certificates in the node's /etc/pki, see
#     make_pki in common.sh; pinned to CPU $VC_PIN_CPU so the QEMU
#     capability cache stays valid), sshd on both of the node's addresses
#     (qemu+ssh, the agent's default transport: root by key, keys in the
#     node's /etc/ssh, see make_ssh in common.sh),
#     corosync (knet; two_node with two nodes) and pacemakerd. The initial CIB sets
#     stonith-enabled=false and dc-deadtime=2s.
#   * the agent: target/debug/vmshift (or $VMSHIFT_BIN) is copied to
#     /tmp/vmshift-cluster/bin/vmshift (mode 755, world-readable dirs: Pacemaker
#     may run meta-data as an unprivileged user) and registered INSIDE each node
#     as /usr/lib/ocf/resource.d/vmshift/server -> that copy: the node's mount
#     namespace has an overlayfs on /usr/lib/ocf/resource.d whose upper dir
#     (in the state dir) holds the link. The machine's own /usr is never
#     written, so the registration can neither overwrite nor be removed by
#     anything else on the machine (an installed vmshift package, the project
#     lab's crm_resource test); a host vmshift/server is shadowed in the nodes.
#     `down` removes it with the nodes and the state dir.
#   * on the first network disk (`xml NAME disk=nbd`): a storage netns vc-st
#     whose qemu-nbd serves it at 10.253.12.254 over a link to each node
#     (storage_up and nbd_disk in common.sh), as a storage network would.
#   Nothing is written to the real /etc, /var, /run or /usr (except the netns
#   entries /run/netns/vc-a|vc-b|vc-c|vc-sw|vc-st).
#
# GUEST  `xml NAME` prints a domain XML for the project lab's guest
#   (tests/lab/guest-init.c: TCG, 128 MiB, dirties 32 MiB at 20 MiB/s, prints
#   "lab-guest tick=N" once a second on ttyS0 -> per node
#   /var/log/libvirt/qemu/NAME-serial.log = `serial a|b|c NAME` on the host;
#   honours the ACPI power button). Built into the cache dir; the kernel comes
#   from `apt-get download` (only unpacked; a .deb already in the project lab's
#   cache /tmp/vmshift-lab-cache/dl is copied instead of downloading again).
#
# SUBCOMMANDS
#   up                    network, daemons, agent registration; waits until all
#                         nodes are online with a DC (idempotent)
#   down [--purge]        idempotent; kills only pids it started (SIGCONT first);
#                         --purge also removes the cache dir
#   status                rc 1 unless everything is up
#   exec a|b|c CMD...     run CMD "on" a node (nsenter -n -m -u into its holder):
#                         crm_mon, crm_resource, cibadmin, virsh -c qemu:///system
#   xml NAME [acpi=0|1] [dirty_mb=N] [rate_mbs=N] [mem_mb=N] [disk=none|shared|local|nbd] [disk_mb=N] [disk_mbs=N] [os=lab|none]
#                         the knobs of the project lab's `xml` (tests/lab/lab.sh)
#   disk NAME [a|b|c]     host path of NAME's disk image (the node's own for a local disk)
#   serial a|b|c NAME     host path of NAME's serial log on that node
#   log a|b|c             host path of that node's pacemaker.log
#   libvirtd-pid a|b|c    that node's libvirtd pid
#   register              copy the binary again (after a rebuild; VMSHIFT_BIN)
#   leftovers             lists anything of the lab that is left; rc 1 if any
#
# STATE /tmp/vmshift-cluster (removed by down); cache /tmp/vmshift-cluster-cache
#   (guest, downloaded kernel package, QEMU capability cache).
# ENV   VMSHIFT_BIN, VC_PIN_CPU (0; empty = no pinning), VC_DC_DEADTIME (2s),
#       VC_NODES ("a b", or "a b c"; read by `up`, which brings a running
#       cluster of other nodes down first; the other commands take the
#       nodes of the cluster that is up, kept in the state dir).
set -euo pipefail

L=/tmp/vmshift-cluster
C=/tmp/vmshift-cluster-cache
LAB_DL=/tmp/vmshift-lab-cache/dl # read only: a kernel .deb the project lab downloaded
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
ROOT=$(cd "$HERE/../.." && pwd)
INIT_SRC=$ROOT/tests/lab/guest-init.c
# The nodes of the cluster that is up, else those asked for.
if [ -s "$L/nodes" ]; then read -ra NODES <"$L/nodes"; else read -ra NODES <<<"${VC_NODES:-a b}"; fi
GUEST_VER=c2 # bump to force a guest rebuild (guest-init.c changes do it anyway)
OCFD=/usr/lib/ocf/resource.d
AGENT=$OCFD/vmshift/server
BIN_COPY=$L/bin/vmshift
VC_PIN_CPU=${VC_PIN_CPU-0}
VC_DC_DEADTIME=${VC_DC_DEADTIME:-2s}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

USAGE="usage: $0 up | down [--purge] | status | exec a|b|c CMD... | xml NAME [acpi=0|1] [dirty_mb=N] [rate_mbs=N] [mem_mb=N] [disk=none|shared|local|nbd] [disk_mb=N] [disk_mbs=N] [os=lab|none] | disk NAME [a|b|c] | serial a|b|c NAME | log a|b|c | libvirtd-pid a|b|c | register | leftovers | primitive ID PROVIDER:TYPE START_S STOP_S MIGRATE_TO_S MIGRATE_FROM_S [NAME=VALUE...]"

nr() { case "$1" in a) echo 1 ;; b) echo 2 ;; c) echo 3 ;; esac; }
ip_bc() { echo "10.253.0.$(nr "$1")"; }
ip_mn() { echo "10.253.1.$(nr "$1")"; }
uuid_of() { echo "76630000-0000-4000-8000-00000000000$1"; }
log() { echo "[vmshift-cluster] $*" >&2; }
die() { echo "[vmshift-cluster] ERROR: $*" >&2; exit 1; }
usage() { echo "$USAGE" >&2; exit 2; }
ms() { echo $(($(date +%s%N) / 1000000)); }
check_node() { [[ " ${NODES[*]} " == *" ${1:-} "* ]] && [ -n "${1:-}" ] || usage; }
check_name() { [[ "${1:-}" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || usage; }
has_netns() { [ -e "/run/netns/$1" ]; }
# (never `producer | grep -q` under pipefail: grep's early exit can SIGPIPE the
# producer and turn a match into a failure; here-strings or grep -c instead)
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pstate() { sed -n 's/^.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null; }
holder() { cat "$L/$1/holder.pid" 2>/dev/null || true; }
# the holder is alive and really ours (its cmdline carries "_node_init <n>")
all_alive() {
	local n
	for n in "${NODES[@]}"; do alive "$n" || return 1; done
}
alive() {
	local p c
	p=$(holder "$1")
	pid_alive "$p" || return 1
	c=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || return 1
	[[ $c == *"cluster.sh _node_init $1"* ]]
}
node_exec() {
	local n=$1 wd=/
	shift
	alive "$n" || die "node-$n is not running (cluster up?)"
	[ -d "$PWD" ] && wd=$PWD
	nsenter -t "$(holder "$n")" -n -m -u --wd="$wd" -- "$@"
}
serial_path() { echo "$L/$1/fs/var/log/libvirt/qemu/$2-serial.log"; }
pcmk_log() { echo "$L/$1/fs/var/log/pacemaker/pacemaker.log"; }
daemon_pid() { # node daemon -> pid if alive
	local p
	p=$(cat "$L/$1/$2.pid" 2>/dev/null) || return 1
	pid_alive "$p" || return 1
	echo "$p"
}

# ---------------------------------------------------------------- guest image
GUEST_UUID_NS=vmshift-cluster
GUEST_DEB_FROM=$LAB_DL
NS=vc      # common.sh's prefix of the nodes' netns (vc-a, vc-b) and the storage netns vc-st
NET=10.253 # common.sh's storage links: $NET.12-15 (see storage_up)
# shellcheck source=../lab/common.sh
. "$ROOT/tests/lab/common.sh"

# ---------------------------------------------------------------- node config
write_node_conf() {
	local n=$1 d="$L/$1/ovl" f="$L/$1/fs" x
	mkdir -p "$d"/{etc,var,ocf}-{upper,work} "$d"/ocf-upper/vmshift "$f"/etc/libvirt/qemu "$f"/run/libvirt \
		"$f"/var/lib/libvirt "$f"/var/cache/libvirt "$f"/var/log/libvirt/qemu \
		"$f"/etc/corosync "$f"/var/lib/corosync "$f"/var/log/corosync \
		"$f"/var/log/pacemaker/bundles "$f"/var/lib/pacemaker/{cib,pengine,blackbox,cores}
	write_libvirt_conf "$f/etc/libvirt" "vmshift-cluster node-$n (netns vc-$n)" "$(uuid_of "$n")" 1
	install_pki "$n"
	cat >"$f/etc/corosync/corosync.conf" <<EOF
totem {
    version: 2
    cluster_name: vmshift-cluster
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}
logging {
    to_stderr: no
    to_syslog: no
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    timestamp: on
}
quorum {
    provider: corosync_votequorum
$([ ${#NODES[@]} -ne 2 ] || echo "    two_node: 1")
}
nodelist {
$(for x in "${NODES[@]}"; do
		printf '    node {\n        name: node-%s\n        nodeid: %s\n        ring0_addr: %s\n    }\n' "$x" "$(nr "$x")" "$(ip_bc "$x")"
	done)
}
EOF
	# initial CIB: no fencing, dc-deadtime 2s (the default 20 s delays every start)
	cat >"$f/var/lib/pacemaker/cib/cib.xml" <<EOF
<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-stonith-enabled" name="stonith-enabled" value="false"/>
        <nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="$VC_DC_DEADTIME"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
EOF
	chown -R hacluster:haclient "$f"/var/lib/pacemaker "$f"/var/log/pacemaker
	chmod 750 "$f"/var/lib/pacemaker/{cib,pengine,blackbox,cores}
	chmod 770 "$f"/var/log/pacemaker
	{
		echo "127.0.0.1 localhost"
		echo "::1 localhost ip6-localhost ip6-loopback"
		for x in "${NODES[@]}"; do echo "$(ip_bc "$x") node-$x"; done
		for x in "${NODES[@]}"; do echo "$(ip_mn "$x") node-$x.mn"; done
	} >"$d/etc-upper/hosts"
	echo "node-$n" >"$d/etc-upper/hostname"
	ln -s "$BIN_COPY" "$d/ocf-upper/vmshift/server" # the agent, for this node only
	node_users "$d/etc-upper"
	install_ssh "$n"
}

# The holder. Runs as: env -i ... setsid ip netns exec vc-<n> unshare -m -u
#   --propagation private -- subreaper bash cluster.sh _node_init <n>  (all
#   exec: same pid). Under subreaper, the QEMUs libvirtd daemonizes are
#   reparented to it and its `wait` reaps them at once (see subreaper.c).
node_init() {
	local n=$1 d="$L/$1/ovl" f="$L/$1/fs" x i
	exec >>"$L/$n/init.log" 2>&1
	set +e
	echo "$(date +%T.%N) node_init node-$n pid $$"
	hostname "node-$n"
	# mount -n: libmount must not write /run/mount/utab in the real /run
	for x in etc var; do
		mount -n -t overlay "vc-$n-$x" -o "lowerdir=/$x,upperdir=$d/$x-upper,workdir=$d/$x-work" "/$x" || exit 1
	done
	mount -n -t overlay "vc-$n-ocf" -o "lowerdir=$OCFD,upperdir=$d/ocf-upper,workdir=$d/ocf-work" "$OCFD" || exit 1
	mount -n -t tmpfs -o mode=0755,size=64m "vc-$n-run" /run || exit 1
	mkdir -p /run/lock /run/resource-agents /run/libvirt && chmod 1777 /run/lock
	mount -n -t tmpfs -o mode=1777,size=256m "vc-$n-shm" /dev/shm || exit 1
	for x in etc/libvirt run/libvirt var/lib/libvirt var/cache/libvirt var/log/libvirt \
		etc/corosync var/lib/corosync var/log/corosync var/lib/pacemaker var/log/pacemaker; do
		mkdir -p "/$x" && mount -n --bind "$f/$x" "/$x" || exit 1
	done
	local pin=()
	if [ -n "$VC_PIN_CPU" ] && command -v taskset >/dev/null; then pin=(taskset -c "$VC_PIN_CPU"); fi
	"${pin[@]}" libvirtd -f /etc/libvirt/libvirtd.conf --listen -p /run/libvirt/vc-libvirtd.pid </dev/null &
	echo $! >"$L/$n/libvirtd.pid"
	export PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none
	corosync -f -c /etc/corosync/corosync.conf </dev/null &
	echo $! >"$L/$n/corosync.pid"
	for i in $(seq 1 100); do corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1 && break; sleep 0.1; done
	echo "$(date +%T.%N) corosync up (try $i)"
	pacemakerd </dev/null &
	echo $! >"$L/$n/pacemakerd.pid"
	echo "$(date +%T.%N) libvirtd $(cat "$L/$n/libvirtd.pid") corosync $(cat "$L/$n/corosync.pid") pacemakerd $!"
	wait
	echo "$(date +%T.%N) all daemons gone, holder exits"
}

# ---------------------------------------------------------------- agent registration
# Inside each node /usr/lib/ocf/resource.d/vmshift/server -> $BIN_COPY (the
# node's overlay, see write_node_conf and node_init); this puts the binary
# there. The copy is replaced by a rename: running agents keep the old one.
cmd_register() {
	local src=${VMSHIFT_BIN:-$ROOT/target/debug/vmshift}
	[ -f "$src" ] && [ -x "$src" ] || die "no agent binary at $src (cargo build first)"
	mkdir -p "$L/bin"
	chmod 755 "$L" "$L/bin"
	install -m 0755 "$src" "$BIN_COPY.tmp" && mv -f "$BIN_COPY.tmp" "$BIN_COPY"
}
# A host-wide link to our copy is never made, but one would be ours to remove.
host_link_is_ours() { [ -L "$AGENT" ] && [ "$(readlink "$AGENT")" = "$BIN_COPY" ]; }

# ---------------------------------------------------------------- up
# Each link a bridge in the switch namespace, each node a port of it: any
# number of nodes, and a node's side (vc-X-mn) can be cut or sniffed alone.
net_up() {
	local n l
	has_netns vc-sw || ip netns add vc-sw
	for l in bc mn; do
		ip -n vc-sw link show "sw-$l" >/dev/null 2>&1 || ip -n vc-sw link add "sw-$l" type bridge
		ip -n vc-sw link set "sw-$l" up
	done
	for n in "${NODES[@]}"; do
		has_netns "vc-$n" || ip netns add "vc-$n"
		ip -n "vc-$n" link set lo up
		for l in bc mn; do
			ip -n "vc-$n" link show "vc-$n-$l" >/dev/null 2>&1 ||
				ip link add "vc-$n-$l" netns "vc-$n" type veth peer name "sw-$n-$l" netns vc-sw
			ip -n vc-sw link set "sw-$n-$l" master "sw-$l" up
		done
	done
	node_addrs
}

node_start() {
	local n=$1
	rm -rf "${L:?}/$n"
	write_node_conf "$n"
	caps_seed "$n"
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root VC_PIN_CPU="$VC_PIN_CPU" \
		setsid ip netns exec "vc-$n" unshare -m -u --propagation private -- "$C/subreaper" bash "$SELF" _node_init "$n" \
		</dev/null >/dev/null 2>&1 9<&- &
	echo $! >"$L/$n/holder.pid"
}

wait_libvirtd() {
	local n=$1 i p
	p=$(holder "$n")
	for i in $(seq 1 900); do
		# pid_alive, not alive(): until the forked subshell has exec'd env, its
		# cmdline is still cluster.sh's own, which alive() does not take for the
		# holder; the pid was written a moment ago, so it cannot be reused yet.
		if pid_alive "$p" && [ -S "$L/$n/fs/run/libvirt/libvirt-sock" ] &&
			node_exec "$n" timeout 20 virsh -q -c qemu:///system version >/dev/null 2>&1; then return 0; fi
		pid_alive "$p" || { cat "$L/$n/init.log" >&2 2>/dev/null; die "node-$n holder died"; }
		sleep 0.1
	done
	die "node-$n libvirtd did not come up (see $L/$n/fs/var/log/libvirt/libvirtd.log)"
}

wait_cluster() { # timeout-s
	local t=$1 s=$SECONDS out on
	while [ $((SECONDS - s)) -lt "$t" ]; do
		out=$(node_exec a crm_mon -1 -X 2>/dev/null || true)
		if grep -q 'current_dc.*present="true"' <<<"$out"; then
			on=$(grep -c '<node name="node-[abc]".* online="true"' <<<"$out" || true)
			[ "$on" -ge ${#NODES[@]} ] && return 0
		fi
		sleep 0.5
	done
	die "cluster not online with ${#NODES[@]} nodes + DC after ${t}s (see $(pcmk_log a))"
}


cmd_up() {
	local t0 n
	t0=$(ms)
	[ $# -eq 0 ] || usage
	up_checks libvirtd virsh qemu-system-x86_64 corosync corosync-cmapctl pacemakerd crm_mon cibadmin crm_resource ip unshare nsenter setsid gcc python3 dpkg-deb apt-get timeout openssl
	[ -d "$OCFD" ] || die "missing $OCFD (resource-agents not installed?)"
	local want
	read -ra want <<<"${VC_NODES:-a b}"
	if [ "${want[*]}" = "${NODES[*]}" ] && all_alive; then
		cmd_register
		wait_cluster 60
		log "already up"
		return 0
	fi
	trap up_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	[ -d "$L" ] && cmd_down # half-up, stale, or other nodes
	NODES=("${want[@]}")
	mkdir -p "$L"
	chmod 755 "$L"
	echo "${NODES[*]}" >"$L/nodes"
	build_all
	cmd_register
	net_up
	for n in "${NODES[@]}"; do node_start "$n"; done
	for n in "${NODES[@]}"; do wait_libvirtd "$n"; done
	for n in "${NODES[@]}"; do sshd_start "$n" "$(holder "$n")" "$L/$n/sshd.pid"; done
	log "libvirtds up after $(($(ms) - t0)) ms"
	caps_keep
	node_exec a timeout 20 virsh -q -c qemu+tcp://node-b/system version >/dev/null ||
		die "node-a cannot reach qemu+tcp://node-b/system"
	node_exec b timeout 20 virsh -q -c qemu+tcp://node-a.mn/system version >/dev/null ||
		die "node-b cannot reach qemu+tcp://node-a.mn/system"
	node_exec a timeout 20 virsh -q -c qemu+tls://node-b/system version >/dev/null ||
		die "node-a cannot reach qemu+tls://node-b/system"
	ssh_wait
	wait_cluster 120
	trap - EXIT INT TERM
	[ -e "$AGENT" ] && log "note: the machine has its own $AGENT; the nodes see this lab's instead"
	log "up in $(($(ms) - t0)) ms: ${NODES[*]/#/node-} online with a DC; ocf:vmshift:server = $BIN_COPY"
}

# ---------------------------------------------------------------- down
# pids in the holder's mount namespace: everything started inside the node
ns_pids() {
	local h=$1 ref p
	ref=$(readlink "/proc/$h/ns/mnt" 2>/dev/null) || return 0
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[ "$p" = "$h" ] && continue
		[ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" = "$ref" ] && echo "$p"
	done
	return 0
}

stop_node() {
	local n=$1 h p i pm cs lv sd left
	alive "$n" || return 0
	h=$(holder "$n")
	pm=$(cat "$L/$n/pacemakerd.pid" 2>/dev/null || true)
	cs=$(cat "$L/$n/corosync.pid" 2>/dev/null || true)
	lv=$(cat "$L/$n/libvirtd.pid" 2>/dev/null || true)
	# a SIGSTOPped process (tests stop libvirtd) must be continued first, or
	# it can neither answer nor exit
	for p in $(ns_pids "$h"); do
		[ "$(pstate "$p")" = T ] && kill -CONT "$p" 2>/dev/null
	done
	if pid_alive "$pm"; then
		kill -TERM "$pm"
		for i in $(seq 1 120); do pid_alive "$pm" || break; sleep 0.25; done
	fi
	if pid_alive "$cs"; then
		kill -TERM "$cs"
		for i in $(seq 1 40); do pid_alive "$cs" || break; sleep 0.25; done
	fi
	# guests: destroyed (fast), then libvirtd
	for p in $(nsenter -t "$h" -n -m -u -- timeout 20 virsh -q -c qemu:///system list --name 2>/dev/null); do
		nsenter -t "$h" -n -m -u -- timeout 20 virsh -q -c qemu:///system destroy "$p" >/dev/null 2>&1 || true
	done
	sd=$(cat "$L/$n/sshd.pid" 2>/dev/null || true)
	if pid_alive "$sd"; then kill -TERM "$sd"; fi
	if pid_alive "$lv"; then
		kill -TERM "$lv"
		for i in $(seq 1 50); do pid_alive "$lv" || break; sleep 0.1; done
	fi
	for i in $(seq 1 20); do [ -z "$(ns_pids "$h")" ] && break; sleep 0.25; done
	left=$(ns_pids "$h" | tr '\n' ' ')
	if [ -n "${left// /}" ]; then
		log "node-$n: SIGKILL to leftover pids in its mount namespace: $(for p in $left; do echo -n "$p($(cat "/proc/$p/comm" 2>/dev/null)) "; done)"
		for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
	fi
	for i in $(seq 1 20); do pid_alive "$h" || break; sleep 0.25; done
	pid_alive "$h" && kill -KILL "$h" 2>/dev/null
	log "node-$n stopped"
}

cmd_down() {
	local n t0 p
	t0=$(ms)
	case "${1:-}" in "" | --purge) ;; *) usage ;; esac
	# a SIGSTOPped libvirtd would hang; continue it before anything else
	for n in "${NODES[@]}"; do p=$(daemon_pid "$n" libvirtd) && kill -CONT "$p" 2>/dev/null || true; done
	# keep Pacemaker from moving or stopping resources while the nodes leave
	for n in "${NODES[@]}"; do
		if alive "$n" && node_exec "$n" timeout 10 crm_attribute -t crm_config -n maintenance-mode -v true >/dev/null 2>&1; then
			break
		fi
	done
	for n in "${NODES[@]}"; do stop_node "$n" & done
	wait
	netns_release "${NODES[@]/#/vc-}"
	! has_netns vc-sw || ip netns del vc-sw || true
	if host_link_is_ours; then rm -f "$AGENT"; fi
	disks_down
	rm -rf "${L:?}"
	[ "${1:-}" != --purge ] || rm -rf "${C:?}"
	log "down in $(($(ms) - t0)) ms"
}

# ---------------------------------------------------------------- status
cmd_status() {
	local n rc=0
	for n in "${NODES[@]}"; do
		if has_netns "vc-$n"; then
			echo "netns vc-$n: $(ip -n "vc-$n" -br addr | awk '/^vc-/{sub(/@.*/,"",$1); print $1"="$3}' | xargs)"
		else
			echo "netns vc-$n: absent"
			rc=1
		fi
		if alive "$n"; then
			echo "node-$n: holder $(holder "$n"), libvirtd $(daemon_pid "$n" libvirtd || echo -), corosync $(daemon_pid "$n" corosync || echo -), pacemakerd $(daemon_pid "$n" pacemakerd || echo -)"
			echo "  domains: $(node_exec "$n" timeout 5 virsh -q -c qemu:///system list --all 2>&1 | awk 'NF{print $2":"$3$4}' | xargs)"
		else
			echo "node-$n: not running"
			rc=1
		fi
	done
	if alive a && [ "$(node_exec a readlink "$AGENT" 2>/dev/null)" = "$BIN_COPY" ] && [ -x "$BIN_COPY" ]; then
		echo "agent (inside the nodes): $AGENT -> $BIN_COPY"
	else
		echo "agent: not registered"
		rc=1
	fi
	if alive a; then node_exec a crm_mon -1 2>&1 | sed 's/^/  /' || rc=1; fi
	return $rc
}

# anything of the lab left on the machine (after down): rc 1 if so
cmd_leftovers() {
	local out=() p c
	for p in vc-a vc-b vc-c vc-sw vc-st; do has_netns "$p" && out+=("netns $p"); done
	c=$(ip -br link 2>/dev/null | awk '$1 ~ /^vc-/{print $1}' | xargs)
	[ -z "$c" ] || out+=("links: $c")
	c=$(awk '$3 ~ /^vc-/ || $5 ~ /vmshift-cluster/ {print $5}' /proc/self/mountinfo | xargs)
	[ -z "$c" ] || out+=("mounts: $c")
	for p in /proc/[0-9]*; do
		c=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
		case "$c" in
		*"cluster.sh _node_init"* | *vc-libvirtd.pid* | *vmshift-cluster/bin/vmshift* | *vmshift-cluster/disks/*) out+=("process ${p#/proc/}: $c") ;;
		esac
	done
	[ ! -e "$L" ] || out+=("state dir $L")
	if host_link_is_ours; then out+=("agent registration $AGENT"); fi
	if [ ${#out[@]} -gt 0 ]; then
		printf 'left over: %s\n' "${out[@]}"
		return 1
	fi
	echo "nothing left"
}

# primitive ID PROVIDER:TYPE START_S STOP_S MIGRATE_TO_S MIGRATE_FROM_S
# [NAME=VALUE...]: the CIB XML of a server Pacemaker may live-migrate (the
# cluster tests' and the bench's), printed for `cibadmin -C -o resources -X`;
# a NAME given twice keeps its last VALUE.
cmd_primitive() {
	[ $# -ge 6 ] || usage
	local id=$1 provider=${2%%:*} type=${2#*:} kv k v attrs=
	check_name "$id"
	[[ "$2" == *:* && "$3$4$5$6" =~ ^[0-9]+$ ]] || usage
	local -A params=()
	local order=()
	for kv in "${@:7}"; do
		k=${kv%%=*}
		[[ "$kv" == *=* && "$k" =~ ^[a-z_]+$ ]] || usage
		[ -n "${params[$k]+set}" ] || order+=("$k")
		params[$k]=${kv#*=}
	done
	for k in "${order[@]}"; do
		# (quoted: bash 5.2's patsub_replacement reads a bare & as the match)
		v=${params[$k]//&/'&amp;'}
		v=${v//</'&lt;'}
		v=${v//\"/'&quot;'}
		attrs+=$'\n'"    <nvpair id=\"$id-$k\" name=\"$k\" value=\"$v\"/>"
	done
	cat <<-EOF
		<primitive id="$id" class="ocf" provider="$provider" type="$type">
		  <instance_attributes id="$id-params">$attrs
		  </instance_attributes>
		  <meta_attributes id="$id-meta">
		    <nvpair id="$id-allow-migrate" name="allow-migrate" value="true"/>
		    <nvpair id="$id-stickiness" name="resource-stickiness" value="100"/>
		  </meta_attributes>
		  <operations>
		    <op id="$id-start" name="start" interval="0s" timeout="${3}s"/>
		    <op id="$id-stop" name="stop" interval="0s" timeout="${4}s"/>
		    <op id="$id-monitor" name="monitor" interval="10s" timeout="30s"/>
		    <op id="$id-migrate_to" name="migrate_to" interval="0s" timeout="${5}s"/>
		    <op id="$id-migrate_from" name="migrate_from" interval="0s" timeout="${6}s"/>
		  </operations>
		</primitive>
	EOF
}

# the subcommands only this lab has (common.sh's dispatch answers the rest)
lab_cmd() {
	local cmd=$1
	shift
	case "$cmd" in
	log) [ $# -eq 1 ] || usage; check_node "$1"; pcmk_log "$1" ;;
	libvirtd-pid) [ $# -eq 1 ] || usage; check_node "$1"; daemon_pid "$1" libvirtd || { log "node-$1 libvirtd not running"; exit 1; } ;;
	register) [ $# -eq 0 ] || usage; lock; alive a || die "cluster not up"; cmd_register ;;
	leftovers) [ $# -eq 0 ] || usage; cmd_leftovers ;;
	primitive) cmd_primitive "$@" ;;
	*) usage ;;
	esac
}

dispatch "$@"
