#!/usr/bin/env python3
"""In-node half of the vmshift bench (tests/bench/bench.py runs it inside a
lab node with `lab.sh exec`). Timing here, not in bench.py, keeps nsenter,
bash and lab.sh start-up out of the numbers. Prints one JSON object.

  time N CMD...                 run CMD N times, one after the other; wall ms
                                and CPU ms (user + system) each
  at-once N CMD...              start N copies of CMD together, "{i}" in
                                an environment value replaced by 1..N in
                                each; each one's wall ms from the common
                                start, and its CPU ms
  run LIMIT_S RUSAGE_EXEC CMD...  run CMD once through rusage_exec (peak RSS;
                                peak PSS and private memory sampled), killed
                                (its process group) after LIMIT_S seconds
  tcp-recv ADDR PORT            accept one TCP stream, count it until EOF
  tcp-send ADDR PORT MIB        send MIB MiB to ADDR:PORT
"""
import json
import os
import signal
import socket
import sys
import tempfile
import time


def out(obj):
    print(json.dumps(obj), flush=True)


def wait_status(status):
    """os.waitstatus_to_exitcode, but a signal is 128+N like a shell."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def cpu_ms(ru):
    """User + system CPU of a reaped child and of every descendant it
    reaped (wait4's rusage: a shell agent's virsh and sed count too)."""
    return (ru.ru_utime + ru.ru_stime) * 1000.0


def quiet():
    """File actions sending a spawned agent's output to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    return [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]


def cmd_time(n, argv):
    """Each run is spawned with posix_spawn (vfork+exec: cheap and the same
    for every agent) and timed from spawn to reaped exit."""
    ms, cpu, rcs = [], [], []
    actions = quiet()
    for _ in range(n):
        t0 = time.monotonic()
        pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
        _, status, ru = os.wait4(pid, 0)
        ms.append((time.monotonic() - t0) * 1000.0)
        cpu.append(cpu_ms(ru))
        rcs.append(wait_status(status))
    out({"ms": ms, "cpu_ms": cpu, "rcs": rcs})


def cmd_at_once(n, argv):
    """As Pacemaker probes or monitors many resources of a node together."""
    actions = quiet()
    t0 = time.monotonic()
    pids = {}
    for i in range(1, n + 1):
        env = {k: v.replace("{i}", str(i)) for k, v in os.environ.items()}
        pids[os.posix_spawnp(argv[0], argv, env, file_actions=actions)] = i - 1
    ms, cpu, rcs = [None] * n, [None] * n, [None] * n
    while pids:
        pid, status, ru = os.wait4(-1, 0)
        i = pids.pop(pid)
        ms[i], cpu[i], rcs[i] = (time.monotonic() - t0) * 1000.0, cpu_ms(ru), wait_status(status)
    out({"ms": ms, "cpu_ms": cpu, "rcs": rcs})


def smaps(spawner):
    """Pss and private (clean + dirty) KiB of the spawner's child, from
    /proc/PID/smaps_rollup, or None once it is gone or not there yet."""
    try:
        with open(f"/proc/{spawner}/task/{spawner}/children") as f:
            child = f.read().split()[0]
        with open(f"/proc/{child}/smaps_rollup") as f:
            kib = {k: int(v.split()[0]) for k, v in
                   (line.split(":", 1) for line in f if line.split(":")[0] in
                    ("Pss", "Private_Clean", "Private_Dirty"))}
        return kib["Pss"], kib["Private_Clean"] + kib["Private_Dirty"]
    except (OSError, IndexError, KeyError, ValueError):
        return None


def cmd_run(limit_s, rusage_exec, argv):
    """One action with a wall-clock limit, as Pacemaker enforces its
    timeout: past it, the whole process group (the agent and e.g. the virsh
    a shell agent started) is killed and the call counts as timed out."""
    fd, rss_file = tempfile.mkstemp(prefix="vmshift-bench-rss-")
    os.close(fd)
    err_fd, err_file = tempfile.mkstemp(prefix="vmshift-bench-err-")
    actions = [(os.POSIX_SPAWN_DUP2, err_fd, 2)]
    t0 = time.monotonic()
    pid = os.posix_spawn(rusage_exec, [rusage_exec, rss_file] + argv, os.environ,
                         file_actions=actions, setpgroup=0)
    os.close(err_fd)
    timed_out = False
    # ru_maxrss counts the shared libraries' file pages too (shared with
    # every process that maps them); PSS divides those among their users and
    # private memory is what the agent alone adds. Sampled every 20 ms, so
    # a call shorter than that may have no sample.
    pss = private = None
    while True:
        sample = smaps(pid)
        if sample:
            pss, private = max(pss or 0, sample[0]), max(private or 0, sample[1])
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > limit_s:
            timed_out = True
            os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    wall = time.monotonic() - t0
    with open(rss_file) as f:
        rss = f.read().strip()
    with open(err_file, errors="replace") as f:
        stderr = f.read()
    os.unlink(rss_file)
    os.unlink(err_file)
    out({"rc": None if timed_out else wait_status(status), "timed_out": timed_out,
         "wall_s": wall, "maxrss_kib": int(rss) if rss else None,
         "peak_pss_kib": pss, "peak_private_kib": private,
         "stderr": stderr[-4000:]})


def cmd_tcp_recv(addr, port):
    """Timed from the first byte to EOF: connection set-up is not payload."""
    srv = socket.create_server((addr, port))
    print("listening", file=sys.stderr, flush=True)
    conn, _ = srv.accept()
    buf = bytearray(4 << 20)
    n = conn.recv_into(buf)
    t0 = time.monotonic()
    total = n
    while n:
        n = conn.recv_into(buf)
        total += n
    secs = time.monotonic() - t0
    conn.close()
    srv.close()
    out({"bytes": total, "secs": secs, "mib_per_s": total / secs / (1 << 20)})


def cmd_tcp_send(addr, port, mib):
    chunk = b"\x5a" * (4 << 20)
    with socket.create_connection((addr, port), timeout=60) as s:
        for _ in range(mib // 4):
            s.sendall(chunk)
    out({"sent_mib": mib // 4 * 4})


def main(argv):
    cmd = argv[0] if argv else ""
    if cmd == "time":
        cmd_time(int(argv[1]), argv[2:])
    elif cmd == "at-once":
        cmd_at_once(int(argv[1]), argv[2:])
    elif cmd == "run":
        cmd_run(float(argv[1]), argv[2], argv[3:])
    elif cmd == "tcp-recv":
        cmd_tcp_recv(argv[1], int(argv[2]))
    elif cmd == "tcp-send":
        cmd_tcp_send(argv[1], int(argv[2]), int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
