#!/usr/bin/env bash
# demo.sh -- the main job on the built-in two-host lab, for people to watch:
# vmshift starts a real QEMU server on node-a, monitors it, stops it, starts
# it again, and every call's log lines and exit code are shown. The lab is
# torn down at the end, also on failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lab="$here/lab.sh"
bin=${VMSHIFT_BIN:-$here/../../target/debug/vmshift}
name=demo-vm1
work=$(mktemp -d)
trap 'bash "$lab" down >/dev/null 2>&1; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

bash "$lab" down >/dev/null 2>&1 || true
echo "== bringing up the lab: node-a and node-b, one libvirtd each"
bash "$lab" up
bash "$lab" xml "$name" acpi=1 >"$work/$name.xml"

call() { # node action [VAR=value...]
	local node=$1 action=$2 rc
	shift 2
	echo
	echo "== node-$node: vmshift $action"
	set +e
	bash "$lab" exec "$node" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=$name HA_LOGFACILITY=none \
		OCF_RESKEY_CRM_meta_timeout=30000 OCF_RESKEY_name=$name \
		OCF_RESKEY_config="$work/$name.xml" "$@" "$bin" "$action" 2>&1 | sed 's/^/   /'
	rc=${PIPESTATUS[0]}
	set -e
	echo "   exit code: $rc"
}

call a monitor OCF_RESKEY_CRM_meta_interval=0
call a start
call a monitor
call b monitor OCF_RESKEY_CRM_meta_interval=0
heartbeat() { # waits (<= 60 s) for the guest's heartbeat, then shows it
	local serial i
	serial=$(bash "$lab" serial a "$name")
	for i in $(seq 1 240); do
		grep -q 'lab-guest tick=' "$serial" 2>/dev/null && break
		sleep 0.25
	done
	echo
	echo "== guest heartbeat on node-a (serial console):"
	grep -a 'lab-guest' "$serial" | tail -n 2 | sed 's/^/   /'
}

heartbeat
call a stop
call a monitor
: >"$(bash "$lab" serial a "$name")" # the serial file is appended to: show the new boot only
call a start
call a monitor
heartbeat
call a stop
echo
echo "== tearing the lab down"
