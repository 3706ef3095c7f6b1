#!/usr/bin/env python3
"""sniff.py IFACE STOPFILE [FIRST-LAST] -- what the migration stream looks like on the wire.

Run inside a lab node (lab.sh exec b python3 sniff.py vs-b-mn /tmp/x.stop).
Captures IPv4 TCP segments on IFACE (an AF_PACKET socket: root, no tcpdump
needed) until STOPFILE exists (at most 300 s), then prints one line per
connection to a QEMU migration port (FIRST-LAST, by default 49152-49215,
lab.sh's qemu.conf):
`SRC->DST FIRST BYTES`, FIRST being the client's first 8 payload bytes in
hex and BYTES the payload seen (a lower bound: a busy machine drops frames). A QEMU migration stream opens with the magic "QEVM" (multifd
channels with 0x11223344); a TLS one with a handshake record (0x16 0x03).
"""
import os
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def main():
    iface, stop = sys.argv[1], sys.argv[2]
    first, last = (sys.argv[3] if len(sys.argv) > 3 else "49152-49215").split("-")
    ports = range(int(first), int(last) + 1)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    s.settimeout(0.2)
    conns = {}
    until = time.monotonic() + 300
    print("ready", file=sys.stderr, flush=True)
    while not os.path.exists(stop) and time.monotonic() < until:
        try:
            frame = s.recv(262144)
        except socket.timeout:
            continue
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:  # TCP
            continue
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            continue
        sport, dport = struct.unpack("!HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if dport not in ports or not payload:
            continue
        key = f"{socket.inet_ntoa(ip[12:16])}:{sport}->{socket.inet_ntoa(ip[16:20])}:{dport}"
        c = conns.setdefault(key, {"first": payload[:8].hex(), "bytes": 0})
        c["bytes"] += len(payload)
    for key, c in conns.items():
        print(key, c["first"], c["bytes"])


if __name__ == "__main__":
    main()
