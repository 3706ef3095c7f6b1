#!/usr/bin/env python3
"""Where the time goes inside libvirt's peer-to-peer migrate call (the
virDomainMigrateToURI3 that vmshift's migrate_to makes), from the debug
logs of the two libvirtds (same host clock in the lab).

Owns: the libvirtd log filters that show the migration's steps
(enable_logging), reading a node's log from a byte offset (log_size,
read_log) so each move's lines are separable, and split(): one move's
two logs -> {phase: ms}.

The node access is a callable `run(*argv) -> stdout` that runs argv
inside a lab node, e.g. lambda *a: bench.lab("exec", "a", *a).

Phases (ms, libvirtd's log timestamps, 1 ms resolution). The first ten
are consecutive and add up to `total`; the dotted ones are parts of one:
  setup          Perform3 RPC dispatched on the source -> p2p code entered
  connect        open the connection to the target's libvirtd
  begin          Begin phase (domain XML + cookie for the target)
  prepare        Prepare3 RPC: target starts QEMU, listens for incoming
  perform_setup  migration caps/params on the source QEMU, `migrate`
  precopy        `migrate` sent -> source guest paused (STOP event)
  switchover     STOP -> source QEMU reports `completed`
  perform_end    `completed` -> Finish3 RPC sent
  finish         Finish3 RPC: target resumes the guest
  confirm        Confirm3 on the source: its QEMU stopped and reaped
  prepare.qemu_start   target QEMU exec'd -> its monitor answered
  prepare.cpu_check    target reads the guest CPU's features over QMP
  prepare.listen       `migrate-incoming` sent -> target QEMU listens
  switchover.libvirt   QEMU `pre-switchover` -> libvirt's migrate-continue
  finish.resume        Finish3 dispatched on target -> RESUME event
  confirm.kill         SIGTERM to the source QEMU -> it is gone
"""
import json
import re
import sys
from datetime import datetime

LOG_PATH = "/var/log/libvirt/vmshift-split.log"
# First match wins: qemu_monitor_json only at info (its events and
# replies), the rest of qemu_monitor at debug (its function entries).
LOG_FILTERS = ("1:qemu.qemu_migration 1:qemu.qemu_process 2:qemu.qemu_monitor_json "
               "1:qemu.qemu_monitor 1:qemu.qemu_driver 1:util.process 1:remote 3:util 3:rpc")

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d{4}): (\d+): \w+ : (\w+):\d+ : (.*)$")


def enable_logging(run, path=LOG_PATH):
    """Turn the node's libvirtd debug log to `path` on, at run time."""
    admin = ("virt-admin", "-c", "libvirtd:///system")
    run(*admin, "daemon-log-filters", LOG_FILTERS)
    run(*admin, "daemon-log-outputs", f"1:file:{path}")
    if path not in run(*admin, "daemon-log-outputs"):
        raise RuntimeError(f"libvirtd did not take the log output {path}")


def log_size(run, path=LOG_PATH):
    """The log's size in bytes now: the offset of the next move's lines."""
    return int(run("stat", "-c", "%s", path).strip())


def read_log(run, offset, path=LOG_PATH):
    """The log's text from byte `offset` on."""
    return run("tail", "-c", f"+{offset + 1}", path)


def parse(text):
    """(seconds, thread, function, message) per timestamped line; the
    continuation lines of multi-line messages are dropped."""
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            t = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f%z").timestamp()
            out.append((t, m[2], m[3], m[4]))
    return out


def last_from(lines, func, needle=""):
    """lines from the last one of `func` containing `needle` on."""
    idx = [i for i, (_, _, f, msg) in enumerate(lines) if f == func and needle in msg]
    if not idx:
        raise ValueError(f"no {func} {needle!r} line")
    return lines[idx[-1]:]


def first(lines, func, needle="", thread=None):
    """Time of the first line of `func` (containing `needle`, by `thread`)."""
    for t, tid, f, msg in lines:
        if f == func and needle in msg and thread in (None, tid):
            return t
    raise ValueError(f"no {func} {needle!r} line")


def split(source_log, target_log):
    """One move's two libvirtd logs -> {phase: ms} (see the header). The
    last migrate call in the source log counts (a restarted copy's)."""
    src = last_from(parse(source_log), "remoteDispatchDomainMigratePerform3ParamsHelper")
    dst = last_from(parse(target_log), "remoteDispatchDomainMigratePrepare3ParamsHelper")
    worker = src[0][1]
    mine = [l for l in src if l[1] == worker]
    # The worker's last line before it serves the next RPC.
    end = next((i for i, l in enumerate(mine[1:], 1) if l[2].startswith("remoteDispatch")), len(mine))
    # QMP events (the monitor thread's lines): the pause, the end.
    stop = first(src, "qemuMonitorJSONIOProcessLine", '"event": "STOP"')
    completed = first(src, "qemuMonitorJSONIOProcessLine", '"data": {"status": "completed"}')
    marks = [
        ("setup", src[0][0]),
        ("connect", first(src, "qemuMigrationSrcPerformPeer2Peer", thread=worker)),
        ("begin", first(src, "qemuMigrationSrcPerformPeer2Peer3", "driver=", worker)),
        ("prepare", first(src, "qemuMigrationSrcPerformPeer2Peer3", "Prepare3", worker)),
        ("perform_setup", first(src, "qemuMigrationSrcPerformPeer2Peer3", "Perform3", worker)),
        ("precopy", first(src, "qemuMonitorSend", '"execute":"migrate"', worker)),
        ("switchover", stop),
        ("perform_end", completed),
        ("finish", first(src, "qemuMigrationSrcPerformPeer2Peer3", "Finish3", worker)),
        ("confirm", first(src, "qemuMigrationSrcPerformPeer2Peer3", "Confirm3", worker)),
    ]
    ends = [t for _, t in marks[1:]] + [mine[end - 1][0]]
    ms = {name: round((e - t) * 1000) for (name, t), e in zip(marks, ends)}
    ms["total"] = round((ends[-1] - src[0][0]) * 1000)

    def span(lines, a, b):
        return round((first(lines, *b) - first(lines, *a)) * 1000)
    ms["prepare.qemu_start"] = span(dst, ("qemuProcessLaunch", "running with pid"),
                                    ("qemuProcessLaunch", "setting up hotpluggable cpus"))
    ms["prepare.cpu_check"] = span(dst, ("qemuMonitorGetGuestCPU",),
                                   ("qemuProcessLaunch", "Detecting IOThread PIDs"))
    ms["prepare.listen"] = span(dst, ("qemuMonitorMigrateIncoming",),
                                ("qemuMonitorEmitMigrationStatus", "status=setup"))
    ms["switchover.libvirt"] = span(src, ("qemuMonitorEmitMigrationStatus", "status=pre-switchover"),
                                    ("qemuMonitorMigrateContinue",))
    ms["finish.resume"] = span(dst, ("remoteDispatchDomainMigrateFinish3ParamsHelper",),
                               ("qemuMonitorEmitResume",))
    ms["confirm.kill"] = round((ends[-1] - first(src, "qemuProcessKill", thread=worker)) * 1000)
    return ms


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: libvirt_split.py SOURCE_LOG TARGET_LOG")
    with open(sys.argv[1], errors="replace") as s, open(sys.argv[2], errors="replace") as d:
        print(json.dumps(split(s.read(), d.read()), indent=1))
