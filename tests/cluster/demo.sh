#!/usr/bin/env bash
# demo.sh -- Pacemaker in the loop, for people to watch: a two-node Pacemaker
# cluster (tests/cluster/cluster.sh) runs a real QEMU server with
# ocf:vmshift:server, an admin moves it with `crm_resource --move`, and the
# cluster live-migrates it (migrate_to on the source, migrate_from on the
# target) while the guest keeps printing its heartbeat. The cluster is torn
# down at the end, also on failure. VMSHIFT_BIN picks another agent build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cl="$here/cluster.sh"
rsc=demo-srv
trap 'echo; echo "== tearing the cluster down"; bash "$cl" down' EXIT
trap 'exit 130' INT TERM

on() { bash "$cl" exec a "$@"; } # the cluster tools, run on node-a
indent() { sed 's/^/   /'; }
ms() { echo $(($(date +%s%N) / 1000000)); }
# nodes the cluster runs the resource on, e.g. "node-b"
where() {
	local xml
	xml=$(on crm_mon -1 -X)
	[ "$(xmllint --xpath "string(//resources/resource[@id='$rsc']/@role)" - <<<"$xml")" = Started ] || return 0
	xmllint --xpath "//resources/resource[@id='$rsc']/node/@name" - <<<"$xml" 2>/dev/null |
		sed 's/ *name="\([^"]*\)"/\1 /g' | xargs
}
wait_on() { # node-X -> waits (<= 120 s) until the resource is Started there only
	local i
	for i in $(seq 1 400); do
		[ "$(where)" = "$1" ] && return 0
		sleep 0.3
	done
	echo "$rsc is not Started on $1 only:" >&2
	on crm_mon -1 >&2
	exit 1
}
serial() { cat "$(bash "$cl" serial "${1#node-}" $rsc)" 2>/dev/null || true; }
last_tick() { serial "$1" | sed -n 's/^lab-guest tick=\([0-9]*\).*/\1/p' | tail -1; }
heartbeat() { # node-X [after-tick]: waits (<= 90 s) for a tick above after-tick, shows the last lines
	local i t
	for i in $(seq 1 360); do
		t=$(last_tick "$1")
		[ -n "$t" ] && [ "$t" -gt "${2:-0}" ] && break
		sleep 0.25
	done
	echo
	echo "== guest heartbeat on $1 (its serial console):"
	serial "$1" | grep -a 'lab-guest' | tail -n 2 | indent
}

bash "$cl" down >/dev/null 2>&1 || true
echo "== bringing up the cluster: node-a and node-b, each with corosync, pacemaker and libvirtd"
bash "$cl" up
cfg=/tmp/vmshift-cluster/$rsc.xml
bash "$cl" xml $rsc >"$cfg"
xml="<primitive id=\"$rsc\" class=\"ocf\" provider=\"vmshift\" type=\"server\">
  <instance_attributes id=\"$rsc-params\">
    <nvpair id=\"$rsc-name\" name=\"name\" value=\"$rsc\"/>
    <nvpair id=\"$rsc-config\" name=\"config\" value=\"$cfg\"/>
    <nvpair id=\"$rsc-transport\" name=\"migration_transport\" value=\"tcp\"/>
  </instance_attributes>
  <meta_attributes id=\"$rsc-meta\">
    <nvpair id=\"$rsc-allow-migrate\" name=\"allow-migrate\" value=\"true\"/>
    <nvpair id=\"$rsc-stickiness\" name=\"resource-stickiness\" value=\"100\"/>
  </meta_attributes>
  <operations>
    <op id=\"$rsc-start\" name=\"start\" interval=\"0s\" timeout=\"90s\"/>
    <op id=\"$rsc-stop\" name=\"stop\" interval=\"0s\" timeout=\"90s\"/>
    <op id=\"$rsc-monitor\" name=\"monitor\" interval=\"10s\" timeout=\"30s\"/>
    <op id=\"$rsc-migrate_to\" name=\"migrate_to\" interval=\"0s\" timeout=\"120s\"/>
    <op id=\"$rsc-migrate_from\" name=\"migrate_from\" interval=\"0s\" timeout=\"60s\"/>
  </operations>
</primitive>"
echo
echo "== the resource: cibadmin -C -o resources -X"
echo "$xml" | indent
on cibadmin -C -o resources -X "$xml"
t0=$(ms)
for i in $(seq 1 400); do [ -n "$(where)" ] && break; sleep 0.3; done
from=$(where)
[ -n "$from" ] || { on crm_mon -1 >&2; exit 1; }
echo
echo "== the cluster started it on $from ($(($(ms) - t0)) ms after cibadmin): crm_mon -1"
on crm_resource --wait -T 120s
on crm_mon -1 | indent
heartbeat "$from"
tick=$(last_tick "$from")
to=node-a
[ "$from" = node-b ] || to=node-b

la=$(bash "$cl" log "${from#node-}")
lb=$(bash "$cl" log "${to#node-}")
oa=$(wc -c <"$la")
ob=$(wc -c <"$lb")
echo
echo "== the admin moves it: crm_resource --move -r $rsc -N $to"
t0=$(ms)
on crm_resource --move -r $rsc -N "$to" | indent
wait_on "$to"
took=$(($(ms) - t0))
on crm_resource --wait -T 120s
echo "   $rsc runs on $to, $took ms after the request; then: crm_resource --clear -r $rsc"
on crm_resource --clear -r $rsc | indent
on crm_resource --wait -T 60s
echo
echo "== crm_mon -1"
on crm_mon -1 | indent
echo
echo "== what the cluster did (pacemaker.log of $from and $to)"
{ tail -c +$((oa + 1)) "$la"; tail -c +$((ob + 1)) "$lb"; } |
	grep -a "Result of [a-z_]* operation for $rsc on" |
	sed 's/^\([A-Za-z]* [0-9]* [0-9:.]*\) .*Result of/\1 Result of/; s/ | .*//' | sort | indent
echo
echo "== the agent's result lines"
{ tail -c +$((oa + 1)) "$la"; tail -c +$((ob + 1)) "$lb"; } |
	grep -aE "INFO: migrate_(to|from): " | sed 's/.*INFO: //; s/ ]$//' | indent
heartbeat "$to" "$tick"
echo "   boots of the guest: $( (serial node-a; serial node-b) | grep -ac 'lab-guest: start') (a live migration, not a restart)"
