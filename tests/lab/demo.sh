#!/usr/bin/env bash
# demo.sh -- the main job on the built-in two-host lab, for people to watch:
# vmshift starts a real QEMU server on node-a, live-migrates it to node-b over
# the migration network and back (Pacemaker's way: migrate_to on the source,
# then migrate_from on the target), and stops it. For each move it shows the
# network chosen and why, the downtime, the total time and the guest's
# heartbeat before and after. The lab is torn down at the end, also on failure.
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
bash "$lab" xml "$name" acpi=1 >"$work/$name.xml"

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

heartbeat() { # node: waits (<= 60 s) for a tick newer than the one given as $2
	local node=$1 after=${2:-0} i t
	for i in $(seq 1 240); do
		t=$(last_tick "$node")
		[ -n "$t" ] && [ "$t" -gt "$after" ] && break
		sleep 0.25
	done
	echo "   guest heartbeat on node-$node: tick ${t:-none}"
}

move() { # from to
	local from=$1 to=$2 before
	before=$(last_tick "$from")
	echo
	echo "###### live migration node-$from -> node-$to (guest heartbeat before: tick $before)"
	call "$from" plan-migration OCF_RESKEY_CRM_meta_migrate_target=node-$to
	call "$from" migrate_to OCF_RESKEY_CRM_meta_migrate_source=node-$from OCF_RESKEY_CRM_meta_migrate_target=node-$to
	call "$to" migrate_from OCF_RESKEY_CRM_meta_migrate_source=node-$from OCF_RESKEY_CRM_meta_migrate_target=node-$to
	heartbeat "$to" "$before"
	echo "   (the tick goes on from $before: the guest kept running, it did not reboot)"
}

call a monitor OCF_RESKEY_CRM_meta_interval=0
call a start
heartbeat a
move a b
move b a
call a stop
call a monitor
echo
echo "== tearing the lab down"
