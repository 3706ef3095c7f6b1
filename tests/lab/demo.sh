#!/usr/bin/env bash
# demo.sh -- the main job on the built-in two-host lab, for people to watch:
# vmshift starts a real QEMU server on node-a, live-migrates it to node-b over
# the migration network and back (Pacemaker's way: migrate_to on the source,
# then migrate_from on the target), and stops it. The server's disk is a
# block device both nodes see (as a SAN LUN or a DRBD device), and the guest
# keeps a write journal on it. For each move it shows the network chosen
# and why, the disks, the downtime, the total time, the guest's heartbeat
# and its last acknowledged disk write before and after, and the journal
# checker's verdict on the disk: no write the guest was told had reached it
# is missing. The lab is torn down at the end, also on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lab="$here/lab.sh"
bin=${VMSHIFT_BIN:-$here/../../target/debug/vmshift}
name=demo-vm1
work=$(mktemp -d)
trap 'bash "$lab" down >/dev/null 2>&1; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

bash "$lab" down >/dev/null 2>&1 || true
echo "== bringing up the lab: node-a and node-b, one libvirtd each,"
echo "   a back-channel link (node-X) and a migration link (node-X.mn)"
bash "$lab" up
bash "$lab" xml "$name" acpi=1 disk=shared >"$work/$name.xml"

call() { # node action [VAR=value...]
	local node=$1 action=$2 rc
	shift 2
	echo
	echo "== node-$node: vmshift $action $*"
	set +e
	bash "$lab" exec "$node" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=$name HA_LOGFACILITY=none \
		OCF_RESKEY_CRM_meta_timeout=60000 OCF_RESKEY_name=$name \
		OCF_RESKEY_config="$work/$name.xml" \
		"$@" "$bin" "$action" 2>&1 | sed 's/^/   /'
	rc=${PIPESTATUS[0]}
	set -e
	echo "   exit code: $rc"
}

last_tick() { { grep -ao "lab-guest tick=[0-9]*" "$(bash "$lab" serial "$1" "$name")" 2>/dev/null || true; } | tail -1 | cut -d= -f2; }

# the guest's last acknowledged disk write on a node: "gen=G seq=N"
last_write() { { grep -ao "lab-guest disk gen=[0-9]* seq=[0-9]*" "$(bash "$lab" serial "$1" "$name")" 2>/dev/null || true; } | tail -1 | cut -d' ' -f3-; }

heartbeat() { # node: waits (<= 60 s) for a tick newer than the one given as $2
	local node=$1 after=${2:-0} i t
	for i in $(seq 1 240); do
		t=$(last_tick "$node")
		[ -n "$t" ] && [ "$t" -gt "$after" ] && break
		sleep 0.25
	done
	echo "   guest heartbeat on node-$node: tick ${t:-none}; last acknowledged disk write: $(last_write "$node")"
}

rc=0
journal() { # node [--live]: the journal checker on the disk as the node sees it
	echo "   disk journal, as node-$1 sees the disk${2:+ (guest running)}:"
	python3 "$here/journal-check.py" ${2:-} "$(bash "$lab" disk "$name" "$1")" \
		"$(bash "$lab" serial a "$name")" "$(bash "$lab" serial b "$name")" | sed 's/^/     /' || rc=1
}

move() { # from to
	local from=$1 to=$2 before
	before=$(last_tick "$from")
	echo
	echo "###### live migration node-$from -> node-$to (guest heartbeat before: tick $before, disk write $(last_write "$from"))"
	call "$from" plan-migration OCF_RESKEY_CRM_meta_migrate_target=node-$to
	call "$from" migrate_to OCF_RESKEY_CRM_meta_migrate_source=node-$from OCF_RESKEY_CRM_meta_migrate_target=node-$to
	call "$to" migrate_from OCF_RESKEY_CRM_meta_migrate_source=node-$from OCF_RESKEY_CRM_meta_migrate_target=node-$to
	heartbeat "$to" "$before"
	echo "   (the tick goes on from $before: the guest kept running, it did not reboot,"
	echo "    and it goes on writing to its disk from node-$to)"
	journal "$to" --live
}

call a monitor OCF_RESKEY_CRM_meta_interval=0
call a start
heartbeat a
move a b
move b a
call a stop
call a monitor
journal a
echo
echo "== tearing the lab down"
exit $rc
