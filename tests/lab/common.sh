# common.sh -- what the project lab (tests/lab/lab.sh) and the cluster lab
# (tests/cluster/cluster.sh) share; both source it. The node's libvirt
# configuration, and the lab guest: a TCG guest whose kernel comes from Debian's
# linux-image package (apt-get download, only unpacked, never installed) and
# whose initramfs holds guest-init.c as /init (it dirties memory and prints a
# heartbeat on ttyS0).
#
# And the lab PKI: a CA and one certificate per node for libvirt's TLS and
# QEMU's (make_pki, install_pki); and ssh, the agent's default transport: a
# host key per node, a client key for root, and each node's sshd config
# (make_ssh, install_ssh, sshd_start).
#
# The sourcing script sets: C (its cache dir), L (its state dir), NODES,
# NS and NET (its netns prefix and address prefix), INIT_SRC (guest-init.c),
# GUEST_VER (bump to force a rebuild), GUEST_UUID_NS (domain UUIDs are derived
# from it and the name, so the same name has the same UUID on both nodes),
# optionally GUEST_DEB_FROM (another lab's download dir to copy the kernel
# .deb from) and LAB_DOMAIN_TYPE, LAB_DIRTY_MB, LAB_RATE_MBS, LAB_MEM_MB (the
# `xml` defaults); and the functions log, die, usage, check_name, ip_bc and
# ip_mn (a node's back-channel and migration-link addresses), and cmd_down
# (what a failed `up` runs); for `dispatch`, SELF, the cmd_* and node_* of
# the subcommands both labs have, and lab_cmd (its own subcommands).

# up_checks TOOL...: `up` needs root and every TOOL on the PATH.
up_checks() {
	local b
	[ "$(id -u)" = 0 ] || die "must be root"
	for b in "$@"; do
		command -v "$b" >/dev/null || die "missing $b"
	done
}

# up_cleanup: `up`'s EXIT trap: an `up` that fails half-way tears down
# what it built.
up_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ $rc -ne 0 ]; then
		log "up failed (rc $rc): tearing down what it built"
		cmd_down || true
	fi
	exit $rc
}

# node_addrs: each node's back-channel and migration-link addresses on its
# ends of the links ($NS-<n>-bc, $NS-<n>-mn), which are then up.
node_addrs() {
	local n
	for n in "${NODES[@]}"; do
		ip -n "$NS-$n" addr replace "$(ip_bc "$n")/24" dev "$NS-$n-bc"
		ip -n "$NS-$n" addr replace "$(ip_mn "$n")/24" dev "$NS-$n-mn"
		ip -n "$NS-$n" link set "$NS-$n-bc" up
		ip -n "$NS-$n" link set "$NS-$n-mn" up
	done
}

# node_users ETC_UPPER: the users a node needs that this machine may lack,
# added to the node's private /etc only (ETC_UPPER: its overlay's upper
# dir): Debian's libvirtd resolves its compiled-in qemu user (libvirt-qemu)
# before reading qemu.conf, so it must exist.
node_users() {
	local e=$1
	if ! getent passwd libvirt-qemu >/dev/null; then
		{ cat /etc/passwd; echo "libvirt-qemu:x:64055:64055:vmshift lab:/var/lib/libvirt:/usr/sbin/nologin"; } >"$e/passwd"
	fi
	if ! getent group libvirt-qemu >/dev/null; then
		{ cat /etc/group; echo "libvirt-qemu:x:64055:"; getent group kvm >/dev/null || echo "kvm:x:64056:"; } >"$e/group"
	fi
}

# The virtio block stack the guest's /init loads, in dependency order
# (Debian builds it as modules).
GUEST_VIRTIO_KO=(virtio_ring.ko virtio.ko virtio_pci_modern_dev.ko virtio_pci_legacy_dev.ko
	virtio_pci.ko virtio_blk.ko)

# build_subreaper: $C/subreaper from subreaper.c (beside guest-init.c), what
# each node's holder runs under (see subreaper.c for why)
SUBREAPER_SRC=${INIT_SRC%/*}/subreaper.c
build_subreaper() {
	[ -f "$SUBREAPER_SRC" ] || die "missing $SUBREAPER_SRC"
	[ "$C/subreaper" -nt "$SUBREAPER_SRC" ] && return 0
	mkdir -p "$C"
	gcc -static -O2 -Wall -o "$C/subreaper" "$SUBREAPER_SRC" >&2
}

# apt must not write its caches to the real /var/cache/apt
APT_OPTS=(-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root)
build_guest() {
	local want g=$C/guest pkg deb ko
	[ -f "$INIT_SRC" ] || die "missing $INIT_SRC"
	want="$GUEST_VER $(sha256sum <"$INIT_SRC" | cut -d' ' -f1)"
	if [ -s "$g/vmlinux" ] && [ -s "$g/initrd.gz" ] && [ "$(cat "$g/.built-$GUEST_VER" 2>/dev/null)" = "$want" ]; then
		return 0
	fi
	mkdir -p "$C/dl" "$g"
	if [ ! -s "$g/vmlinuz" ] || [ ! -s "$g/button.ko" ] || [ ! -s "$g/virtio_blk.ko" ]; then
		pkg=$(apt-cache "${APT_OPTS[@]}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
		[ -n "$pkg" ] || die "apt knows no linux-image-<abi>-amd64 package (apt lists missing?)"
		if ! ls "$C/dl/$pkg"_*.deb >/dev/null 2>&1; then
			deb=$(ls "${GUEST_DEB_FROM:-/nonexistent}/$pkg"_*.deb 2>/dev/null | head -1 || true)
			if [ -n "$deb" ] && dpkg-deb --info "$deb" >/dev/null 2>&1; then
				log "copying $deb (downloaded by the other lab)"
				cp "$deb" "$C/dl/"
			else
				log "downloading $pkg (apt-get download, only unpacked, never installed)"
				(cd "$C/dl" && apt-get "${APT_OPTS[@]}" -q download "$pkg" >&2) || die "apt-get download $pkg failed"
			fi
		fi
		deb=$(ls "$C/dl/$pkg"_*.deb | head -1)
		rm -rf "$C/dl/x" && mkdir -p "$C/dl/x"
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$C/dl/x" --wildcards ./boot/ '*/drivers/acpi/button.ko' '*/drivers/input/evdev.ko' \
			"${GUEST_VIRTIO_KO[@]/#/*/}"
		cp "$C"/dl/x/boot/vmlinuz-* "$g/vmlinuz"
		for ko in button.ko evdev.ko "${GUEST_VIRTIO_KO[@]}"; do
			find "$C/dl/x/lib" -name "$ko" -exec cp {} "$g/" \;
		done
		rm -rf "$C/dl/x"
	fi
	# The kernel the guest boots: the ELF inside the package's bzImage,
	# which QEMU starts at its PVH entry point (the kernel's Xen PVH note).
	# A TCG vCPU took 3.5 s of a 7 s boot to decompress the bzImage itself.
	python3 - "$g/vmlinuz" "$g/vmlinux" <<'EOF' || die "no xz-compressed ELF kernel in $g/vmlinuz"
import lzma, os, sys
src, out = sys.argv[1], sys.argv[2]
image = open(src, "rb").read()
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(image[image.index(b"\xfd7zXZ\x00"):])
if not elf.startswith(b"\x7fELF"):
    sys.exit(1)
open(out + ".tmp", "wb").write(elf)
os.replace(out + ".tmp", out)
EOF
	gcc -static -O2 -Wall -o "$g/init" "$INIT_SRC" >&2
	python3 - "$g/initrd.gz" "$g/init" "$g/evdev.ko" "$g/button.ko" "${GUEST_VIRTIO_KO[@]/#/$g/}" <<'EOF'
import sys, gzip, os
out, init, mods = sys.argv[1], sys.argv[2], [m for m in sys.argv[3:] if os.path.exists(m)]
def ent(name, mode, data=b"", ino=1):  # cpio "newc" entry
    nb = name.encode() + b"\0"
    hdr = "070701" + "".join("%08X" % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
    b = hdr.encode() + nb
    b += b"\0" * ((4 - len(b) % 4) % 4)
    return b + data + b"\0" * ((4 - len(data) % 4) % 4)
with gzip.open(out + ".tmp", "wb") as f:
    f.write(ent("init", 0o100755, open(init, "rb").read())
            + b"".join(ent(os.path.basename(m), 0o100644, open(m, "rb").read(), 2 + i) for i, m in enumerate(mods))
            + ent("TRAILER!!!", 0, b"", 0))
os.replace(out + ".tmp", out)
EOF
	rm -f "$g"/.built-*
	echo "$want" >"$g/.built-$GUEST_VER"
	chmod 755 "$C" "$g"
	log "guest built: $g/{vmlinux,initrd.gz}"
}

# disk_xml TYPE SOURCE: the guest's one disk, vda, uncached (libvirt asks
# cache=none of a disk it does not copy; O_DIRECT writes reach the image).
disk_xml() {
	printf "\n    <disk type='%s' device='disk'>\n      <driver name='qemu' type='raw' cache='none' io='native'/>\n      %s\n      <target dev='vda' bus='virtio'/>\n    </disk>" "$1" "$2"
}

# domain_xml NAME ACPI DIRTY_MB RATE_MBS MEM_MB DISK_MBS [block:DEV|file:PATH|nbd:HOST PORT]
# With GUEST_OS=none, the guest has no kernel: its firmware finds nothing to
# boot and halts, a running domain that costs the host next to nothing.
domain_xml() {
	local name=$1 acpi=$2 dirty=$3 rate=$4 mem=$5 disk_mbs=$6 src=${7:-} h p uuid disk='' os=''
	# block: a device both nodes see at the same path, as a SAN LUN or a
	# DRBD device is seen: libvirt migrates it without copying (cache=none,
	# which its migration safety check asks of shared disks). file: an
	# image on each node's own filesystem, copied by the move. nbd: a
	# network disk both nodes reach, shared like a LUN.
	case "$src" in
	block:*) disk=$(disk_xml block "<source dev='${src#block:}'/>") ;;
	nbd:*)
		read -r h p <<<"${src#nbd:}"
		disk=$(disk_xml network "<source protocol='nbd' name='$name'><host name='$h' port='$p'/></source>")
		;;
	file:*) disk=$(disk_xml file "<source file='${src#file:}'/>") ;;
	esac
	[ "${GUEST_OS:-lab}" = none ] || os="
    <kernel>$C/guest/vmlinux</kernel>
    <initrd>$C/guest/initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 lab_dirty_mb=$dirty lab_rate_mbs=$rate lab_acpi=$acpi lab_disk_mbs=$disk_mbs</cmdline>"
	h=$(printf '%s' "$GUEST_UUID_NS:$name" | md5sum | cut -c1-32)
	uuid="${h:0:8}-${h:8:4}-4${h:13:3}-8${h:17:3}-${h:20:12}" # same NAME -> same UUID on both nodes
	cat <<EOF
<domain type='${LAB_DOMAIN_TYPE:-qemu}'>
  <name>$name</name>
  <uuid>$uuid</uuid>
  <memory unit='MiB'>$mem</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>$os
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>$disk
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/$name-serial.log' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='/var/log/libvirt/qemu/$name-serial.log' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# The size of a disk image cmd_xml creates (disk_mb=N; an existing image
# keeps its size).
DISK_MB=4

# shared_disk NAME: the loop device of NAME's shared disk (a DISK_MB file in
# the state dir, attached once; disks_down detaches it).
shared_disk() {
	local img=$L/disks/$1.img dev
	mkdir -p "$L/disks"
	[ -e "$img" ] || truncate -s "${DISK_MB}M" "$img"
	dev=$(losetup -j "$img" | cut -d: -f1 | head -1)
	[ -n "$dev" ] || dev=$(losetup -f --show "$img") || die "losetup $img"
	echo "$dev"
}

# local_path NAME: where NAME's local disk is in each node's own view.
local_path() { echo "/var/lib/libvirt/images/$1.img"; }

# local_disk NAME: the path of NAME's local disk, an image of the same
# size on each node's own /var/lib/libvirt (private to the node), created
# empty where missing: a storage copy needs the target's image to exist.
local_disk() {
	local path n
	path=$(local_path "$1")
	for n in "${NODES[@]}"; do
		mkdir -p "$L/$n/fs/var/lib/libvirt/images"
		[ -e "$L/$n/fs$path" ] || truncate -s "${DISK_MB}M" "$L/$n/fs$path"
	done
	echo "$path"
}

# disk_image NAME [NODE]: the host path of NAME's disk image: the node's
# own image when it has one, else the shared one.
disk_image() {
	local own=${2:+$L/$2/fs$(local_path "$1")}
	if [ -n "$own" ] && [ -e "$own" ]; then echo "$own"; else echo "$L/disks/$1.img"; fi
}

# cmd_disk NAME [NODE]: the `disk` command of both labs.
cmd_disk() {
	[ $# -ge 1 ] && [ $# -le 2 ] || usage
	check_name "$1"
	[ $# -eq 1 ] || check_node "$2"
	disk_image "$@"
}

# The storage namespace ($NS-st): a third host that serves network disks
# (qemu-nbd) at one address both nodes reach, $NET.12.254 (st_addr), over a link of
# its own to each node ($NET.13.0/24 to a, $NET.14.0/24 to b, $NET.15.0/24
# to c), as an NBD or
# iSCSI server on a storage network would. Each node's link is $NS-<n>-st.
# NS and NET are each lab's: vs<id> and 10.251 (lab.sh), vc and 10.253
# (cluster.sh).
st_addr() { echo "$NET.12.254"; }
storage_up() {
	local n i=13
	[ -e "/run/netns/$NS-st" ] || ip netns add "$NS-st"
	ip -n "$NS-st" link set lo up
	ip -n "$NS-st" addr replace "$(st_addr)/32" dev lo
	for n in "${NODES[@]}"; do
		if ! ip -n "$NS-$n" link show "$NS-$n-st" >/dev/null 2>&1; then
			ip link add "$NS-$n-st" netns "$NS-$n" type veth peer name "$NS-st-$n" netns "$NS-st"
		fi
		ip -n "$NS-$n" addr replace "$NET.$i.1/24" dev "$NS-$n-st"
		ip -n "$NS-st" addr replace "$NET.$i.254/24" dev "$NS-st-$n"
		ip -n "$NS-$n" link set "$NS-$n-st" up
		ip -n "$NS-st" link set "$NS-st-$n" up
		ip -n "$NS-$n" route replace "$(st_addr)/32" via "$NET.$i.254"
		i=$((i + 1))
	done
}

# nbd_disk NAME: "HOST PORT" of an NBD export of NAME's disk (a DISK_MB file
# in the state dir) that qemu-nbd serves in the storage namespace, started
# once (its pid in NAME.nbd.pid; disks_down stops it). --shared: the source
# and the target QEMU are both connected during a move; --cache=none: an
# acknowledged write is on the image, not in the server's page cache.
nbd_disk() {
	local img=$L/disks/$1.img pid=$L/disks/$1.nbd.pid port
	port=$((10809 + $(printf '%s' "$1" | cksum | cut -d' ' -f1) % 1000))
	mkdir -p "$L/disks"
	[ -e "$img" ] || truncate -s "${DISK_MB}M" "$img"
	storage_up >&2
	if ! { [ -s "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null; }; then
		ip netns exec "$NS-st" qemu-nbd --fork --pid-file="$pid" --persistent --shared=8 \
			--format=raw --export-name="$1" --bind="$(st_addr)" --port="$port" \
			--cache=none --aio=native "$img" >&2 || die "qemu-nbd $img"
	fi
	echo "$(st_addr) $port"
}

# disks_down: stops the lab's NBD servers (by their pid files) and its
# storage namespace, and detaches the loop devices of its disk files, and
# only those.
disks_down() {
	local img dev pid
	for pid in "$L"/disks/*.nbd.pid; do
		[ -s "$pid" ] || continue
		kill "$(cat "$pid")" 2>/dev/null || true
	done
	[ ! -e "/run/netns/$NS-st" ] || ip netns del "$NS-st" || true
	for img in "$L"/disks/*.img; do
		[ -e "$img" ] || continue
		for dev in $(losetup -j "$img" | cut -d: -f1); do losetup -d "$dev" || true; done
	done
}

# cmd_xml NAME [knob=value...]: the guest's domain XML. Every guest has a
# disk with the write journal unless disk=none: shared (a loop device both
# nodes see) by default, so that every move proves no acknowledged write
# was lost, not only the storage tests'.
cmd_xml() {
	local name=${1:-} acpi=1 dirty=${LAB_DIRTY_MB:-32} rate=${LAB_RATE_MBS:-20} mem=${LAB_MEM_MB:-128} disk_mbs=0 a disk=shared dev= GUEST_OS=lab
	check_name "$name"
	shift
	for a in "$@"; do
		case "$a" in
		acpi=0 | acpi=1) acpi=${a#*=} ;;
		dirty_mb=[0-9]*) dirty=${a#*=} ;;
		rate_mbs=[0-9]*) rate=${a#*=} ;;
		mem_mb=[0-9]*) mem=${a#*=} ;;
		disk_mbs=[0-9]*) disk_mbs=${a#*=} ;;
		disk_mb=[0-9]*) DISK_MB=${a#*=} ;;
		disk=none | disk=shared | disk=local | disk=nbd) disk=${a#*=} ;;
		os=none | os=lab) GUEST_OS=${a#*=} ;;
		*) usage ;;
		esac
	done
	for a in "$dirty" "$rate" "$mem" "$disk_mbs" "$DISK_MB"; do [[ "$a" =~ ^[0-9]+$ ]] || usage; done
	case "$disk" in
	shared) dev=block:$(shared_disk "$name") ;;
	local) dev=file:$(local_disk "$name") ;;
	nbd) dev=nbd:$(nbd_disk "$name") ;;
	esac
	build_guest # no-op when the cached guest is current
	domain_xml "$name" "$acpi" "$dirty" "$rate" "$mem" "$disk_mbs" "$dev"
}

# write_libvirt_conf DIR LABEL UUID TLS: libvirtd.conf and qemu.conf in DIR
# (the node's /etc/libvirt) -- test only: unauthenticated TCP (16509) inside
# the lab's netns, TLS (16514) too when TLS=1 (certificates in the node's
# /etc/pki). The read-write UNIX socket keeps Debian's compiled-in "polkit":
# libvirtd lets root in without asking polkit (its AUTH_LIST answer), which
# vmshift's direct monitor relies on (src/libvirt/rpc.rs). QEMU runs as
# root without security driver, cgroups or namespaces (none of which work
# inside the labs' namespaces); its serial output goes to a file the tests
# read.
write_libvirt_conf() {
	local dir=$1 label=$2 uuid=$3 tls=$4
	cat >"$dir/libvirtd.conf" <<EOF
# $label -- test only
listen_tls = $tls
listen_tcp = 1
tcp_port = "16509"
listen_addr = "0.0.0.0"
auth_tcp = "none"
auth_unix_rw = "polkit"
auth_unix_ro = "none"
host_uuid = "$uuid"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
keepalive_interval = 5
keepalive_count = 5
EOF
	cat >"$dir/qemu.conf" <<EOF
# $label
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
migration_port_min = 49152
migration_port_max = 49215
default_tls_x509_verify = 1
EOF
}

# A lab CA and one certificate per node, for libvirtd's TLS listener and
# client (qemu+tls://) and for QEMU's native TLS on the migration stream.
# Each node certificate serves both ends (serverAuth and clientAuth) and
# names every way the node is reached: node-X, node-X.mn and both
# addresses. libvirt checks CA:TRUE/keyCertSign on the CA and CA:FALSE,
# digitalSignature+keyEncipherment and the purposes on the others.
make_pki() {
	local p=$L/pki n ext
	[ -s "$p/ca-cert.pem" ] && return 0
	command -v openssl >/dev/null || die "missing openssl"
	mkdir -p "$p"
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=vmshift-lab/CN=vmshift-lab CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-keyout "$p/ca-key.pem" -out "$p/ca-cert.pem" 2>/dev/null || die "openssl: CA"
	for n in "${NODES[@]}"; do
		ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:node-$n,DNS:node-$n.mn,IP:$(ip_bc "$n"),IP:$(ip_mn "$n")"
		openssl req -newkey rsa:2048 -nodes -subj "/O=vmshift-lab/CN=node-$n" \
			-keyout "$p/$n-key.pem" -out "$p/$n.csr" 2>/dev/null || die "openssl: node-$n key"
		openssl x509 -req -days 30 -in "$p/$n.csr" -CA "$p/ca-cert.pem" -CAkey "$p/ca-key.pem" \
			-CAcreateserial -extfile <(echo "$ext") -out "$p/$n-cert.pem" 2>/dev/null || die "openssl: node-$n cert"
	done
}

# The node's certificates where libvirt and QEMU look by default: the
# libvirt client and server under /etc/pki/{CA,libvirt}, QEMU under
# /etc/pki/qemu (qemu.conf's default_tls_x509_cert_dir).
install_pki() {
	local n=$1 p=$L/pki e=$L/$1/ovl/etc-upper/pki role
	mkdir -p "$e/CA" "$e/libvirt/private" "$e/qemu"
	cp "$p/ca-cert.pem" "$e/CA/cacert.pem"
	cp "$p/ca-cert.pem" "$e/qemu/ca-cert.pem"
	for role in server client; do
		cp "$p/$n-cert.pem" "$e/libvirt/${role}cert.pem"
		cp "$p/$n-key.pem" "$e/libvirt/private/${role}key.pem"
		cp "$p/$n-cert.pem" "$e/qemu/$role-cert.pem"
		cp "$p/$n-key.pem" "$e/qemu/$role-key.pem"
	done
	chmod 600 "$e"/libvirt/private/*.pem "$e"/qemu/*-key.pem
}

# ---------------------------------------------------------------- ssh
# migration_transport=ssh, the agent's default: the source libvirtd reaches
# the target's as qemu+ssh://node-X/system (ssh, then virt-ssh-helper on the
# target). Keys live in the state dir; each node gets them in its private
# /etc/ssh, so root's real ~/.ssh and /etc/ssh are never touched.

# The sshd binary: the host's, or one unpacked from Debian's openssh-server
# into the cache (apt-get download, never installed: installing the package
# would enable an sshd on the host itself).
SSHD=
find_sshd() {
	local deb
	if [ -x /usr/sbin/sshd ]; then SSHD=/usr/sbin/sshd; return 0; fi
	SSHD=$C/sshd/sshd
	[ -x "$SSHD" ] && return 0
	mkdir -p "$C/dl" "$C/sshd"
	if ! ls "$C"/dl/openssh-server_*.deb >/dev/null 2>&1; then
		log "downloading openssh-server (apt-get download, only unpacked, never installed)"
		(cd "$C/dl" && apt-get "${APT_OPTS[@]}" -q download openssh-server >&2) || die "apt-get download openssh-server failed"
	fi
	deb=$(ls "$C"/dl/openssh-server_*.deb | head -1)
	dpkg-deb --fsys-tarfile "$deb" | tar -x -O ./usr/sbin/sshd >"$SSHD.tmp" || die "unpacking sshd from $deb"
	chmod 755 "$SSHD.tmp" && mv "$SSHD.tmp" "$SSHD"
}

make_ssh() {
	local s=$L/ssh n
	find_sshd
	[ -s "$s/known_hosts" ] && return 0
	mkdir -p "$s"
	ssh-keygen -q -t ed25519 -N '' -C vmshift-lab -f "$s/id" || die "ssh-keygen: client key"
	for n in "${NODES[@]}"; do
		ssh-keygen -q -t ed25519 -N '' -C "node-$n" -f "$s/host-$n" || die "ssh-keygen: node-$n"
		echo "node-$n,node-$n.mn,$(ip_bc "$n"),$(ip_mn "$n") $(cut -d' ' -f1,2 "$s/host-$n.pub")"
	done >"$s/known_hosts"
}

# install_ssh N: node N's sshd (on its two addresses, root by key only) and
# root's ssh client setup for the lab's names, in the node's /etc/ssh. After
# any other change to the node's /etc/passwd.
install_ssh() {
	local n=$1 s=$L/ssh e=$L/$1/ovl/etc-upper/ssh
	mkdir -p "$e/ssh_config.d"
	cp "$s/host-$n" "$e/vmshift_lab_host_key"
	cp "$s/id" "$e/vmshift_lab_id"
	cp "$s/id.pub" "$e/vmshift_lab_authorized_keys"
	cp "$s/known_hosts" "$e/vmshift_lab_known_hosts"
	chmod 600 "$e/vmshift_lab_host_key" "$e/vmshift_lab_id"
	local pw=$L/$n/ovl/etc-upper/passwd h=$L/$n/root
	[ -s "$pw" ] || cat /etc/passwd >"$pw"
	# sshd's privilege separation user, added to the node's /etc only.
	getent passwd sshd >/dev/null || echo "sshd:x:64057:65534::/run/sshd:/usr/sbin/nologin" >>"$pw"
	# root's home in the sessions sshd starts: a stock Debian root's dot
	# files, not this machine's. bash reads ~/.bashrc for every command
	# sshd runs, and this machine's ran pyenv: 120 ms on every qemu+ssh
	# connection, which a cluster node does not pay.
	mkdir -p "$h" && chmod 700 "$h"
	cp /usr/share/base-files/dot.bashrc "$h/.bashrc"
	cp /usr/share/base-files/dot.profile "$h/.profile"
	sed -i "s|^\(root:[^:]*:0:0:[^:]*:\)[^:]*:|\1$h:|" "$pw"
	cat >"$e/vmshift_lab_sshd_config" <<EOF
ListenAddress $(ip_bc "$n")
ListenAddress $(ip_mn "$n")
HostKey /etc/ssh/vmshift_lab_host_key
AuthorizedKeysFile /etc/ssh/vmshift_lab_authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
EOF
	cat >"$e/ssh_config.d/vmshift-lab.conf" <<EOF
Host $(for x in "${NODES[@]}"; do echo -n "node-$x node-$x.mn "; done)
	IdentityFile /etc/ssh/vmshift_lab_id
	UserKnownHostsFile /etc/ssh/vmshift_lab_known_hosts
	StrictHostKeyChecking yes
	BatchMode yes
EOF
}

# sshd_start N PID PIDFILE: node N's sshd, in the namespaces of PID (a
# process that holds the node's: the lab's libvirtd, the cluster's holder),
# in the foreground of its own session; its pid goes to PIDFILE.
sshd_start() {
	local n=$1 p=$2
	nsenter -t "$p" -n -m -u -- mkdir -p /run/sshd
	# setsid and nsenter exec(): $! is sshd's pid.
	setsid nsenter -t "$p" -n -m -u -- "$SSHD" -D -e -f /etc/ssh/vmshift_lab_sshd_config \
		>"$L/$n/sshd.log" 2>&1 </dev/null 9<&- &
	echo $! >"$3"
}

# ssh_wait: both nodes reach the other's libvirtd over qemu+ssh (sshd takes
# a moment to listen). Needs node_exec.
ssh_wait() {
	local from to i
	for from in "${NODES[@]}"; do
		for to in "${NODES[@]}"; do
			[ "$from" != "$to" ] || continue
			for i in $(seq 1 50); do
				if node_exec "$from" timeout 20 virsh -q -c "qemu+ssh://node-$to/system" version >/dev/null 2>&1; then
					continue 2
				fi
				sleep 0.1
			done
			cat "$L/$to/sshd.log" >&2 2>/dev/null || true
			die "node-$from cannot reach qemu+ssh://node-$to/system"
		done
	done
}

# serialize up/down and whatever else a lab locks (the lock is on the calling
# script's file: nothing written)
lock() { exec 9<"$SELF" && flock 9; }

# dispatch CMD ARG...: the subcommands both labs answer the same way; any
# other goes to the lab's own lab_cmd.
dispatch() {
	local cmd=${1:-} n
	[ $# -eq 0 ] || shift
	case "$cmd" in
	up) lock; cmd_up "$@" ;;
	down) lock; cmd_down "$@" ;;
	status) [ $# -eq 0 ] || usage; cmd_status ;;
	exec) check_node "${1:-}"; n=$1; shift; [ $# -gt 0 ] || usage; node_exec "$n" "$@" ;;
	xml) cmd_xml "$@" ;;
	disk) cmd_disk "$@" ;;
	serial) [ $# -eq 2 ] || usage; check_node "$1"; check_name "$2"; serial_path "$1" "$2" ;;
	_node_init) node_init "$1" ;;
	*) lab_cmd "$cmd" "$@" ;;
	esac
}

# netns_release NETNS...: the nodes' network namespaces, once their daemons
# are down. The agent's shared ssh connections to peers (src/ssh.rs: masters
# that outlive an action by a minute, titled "ssh: /run/vmshift/ssh/...")
# are ended, and the sessions the lab's sshd served them end with them. Any
# other process left was not started by the lab: it is named, not killed.
# Then the namespaces go.
netns_release() {
	local ns p i left
	ssh_left() { # the pids of the masters and sshd sessions in the namespaces
		for ns in "$@"; do
			for p in $(ip netns pids "$ns" 2>/dev/null); do
				if grep -qaE '^(ssh: /run/vmshift/ssh/|sshd: )' "/proc/$p/cmdline" 2>/dev/null; then echo "$p"; fi
			done
		done
	}
	left=$(ssh_left "$@")
	for p in $left; do
		if grep -qa '^ssh: /run/vmshift/ssh/' "/proc/$p/cmdline" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; fi
	done
	for i in $(seq 1 20); do
		[ -n "$(ssh_left "$@")" ] || break
		sleep 0.1
	done
	for ns in "$@"; do
		[ -e "/run/netns/$ns" ] || continue
		left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
		[ -z "${left// /}" ] || log "warning: processes still in netns $ns (not started by the lab, not killed): $left"
		ip netns del "$ns" || true
	done
}

# build_all: what both labs build before their nodes start: the subreaper,
# the guest, the TLS certificates, the ssh keys.
build_all() {
	build_subreaper
	build_guest
	make_pki
	make_ssh
}

# caps_seed N: node N's QEMU capability cache, from the one a lab before
# kept (a cold probe takes 7-15 s). caps_keep: keeps node-a's for the next.
caps_seed() {
	local d=$L/$1/fs/var/cache/libvirt/qemu/capabilities
	[ -d "$C/qemu-caps" ] || return 0
	mkdir -p "$d"
	cp "$C"/qemu-caps/*.xml "$d/" 2>/dev/null || true
}
caps_keep() {
	local d=$L/a/fs/var/cache/libvirt/qemu/capabilities
	if ls "$d"/*.xml >/dev/null 2>&1; then
		mkdir -p "$C/qemu-caps" && cp "$d"/*.xml "$C/qemu-caps/"
	fi
}
