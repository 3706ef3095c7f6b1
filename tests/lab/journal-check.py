#!/usr/bin/env python3
"""journal-check.py -- proves that no write the lab guest acknowledged was lost.

usage: journal-check.py [--live] IMAGE SERIAL_LOG...

The lab guest (guest-init.c) writes one 4 KiB record every ~50 ms to slot
seq % slots of its disk with O_DIRECT|O_DSYNC and prints
`lab-guest disk gen=G seq=N` on its serial console only after the write
returned: an acknowledged write. Record layout (little-endian):
  0 magic b"VMSJRNL1" | 8 gen u64 | 16 seq u64 | 24 slots u32 | 28 zero u32 |
  32 mono_ns u64 | 40..4088 fill, byte i = (seq * 31 + i) & 0xff |
  4088 FNV-1a 64 of bytes 0..4088
gen is the boot generation (one more than the highest on the disk at boot).
The journal holds the first SLOTS (256) records, 1 MiB. The rest of the
disk is the bulk writer's (a guest writing hard, lab_disk_mbs=N): 4 KiB
blocks of 0 magic b"VMSBULK1" | 8 gen u64 | 16 n u64 | 24 block u32 |
28 zero u32 | 32..4096 fill, every byte n & 0xff.

Checks, for the newest generation G (on the disk or in the serial logs of
every node the guest ran on):
  * every slot is empty (all zero) or a whole, valid record (magic,
    checksum, fill, seq % slots == slot);
  * the highest seq of G on the disk >= the last seq of G acknowledged;
  * every acknowledged seq s of G is where it must be: its slot holds s, or
    a later seq of G that overwrote it (s + k * slots).
  * every bulk block is empty or whole (magic, its own index, one fill);
    it is no journal: nothing acknowledges it, so only damage is checked.
With --live the guest still runs: the one slot after the newest record may
be half-written (the write in flight) and is not counted against it, and
bulk blocks are not checked (the host may read one while it is written).
Prints one summary line; exit 0 when all hold, 1 with the reasons if not.
"""
import re
import struct
import sys

REC = 4096
SLOTS = 256
MAGIC = b"VMSJRNL1"
BULK = b"VMSBULK1"
# The guest's tty writes "\r\n" line ends to the serial log.
ACK = re.compile(rb"^lab-guest disk gen=(\d+) seq=(\d+)\r?$", re.M)


def fnv(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def parse(slot, rec):
    """(gen, seq, slots) of a valid record, None if empty, str if damaged."""
    if rec == bytes(REC):
        return None
    if rec[:8] != MAGIC:
        return f"slot {slot}: no record magic"
    gen, seq, slots, _zero, _mono = struct.unpack_from("<QQIIQ", rec, 8)
    if struct.unpack_from("<Q", rec, REC - 8)[0] != fnv(rec[: REC - 8]):
        return f"slot {slot}: checksum mismatch (gen {gen} seq {seq})"
    fill = bytes((seq * 31 + i) & 0xFF for i in range(40, REC - 8))
    if rec[40 : REC - 8] != fill:
        return f"slot {slot}: fill damaged (gen {gen} seq {seq})"
    if slots == 0 or seq % slots != slot:
        return f"slot {slot}: holds seq {seq}, which belongs in slot {seq % max(slots, 1)}"
    return gen, seq, slots


def bulk_damage(block, rec):
    """Why a bulk block is damaged, None if it is empty or whole."""
    if rec == bytes(REC):
        return None
    if rec[:8] != BULK:
        return f"bulk block {block}: no bulk magic"
    gen, n, index, _zero = struct.unpack_from("<QQII", rec, 8)
    if index != block:
        return f"bulk block {block}: says it is block {index} (gen {gen} n {n})"
    if rec[32:] != bytes([n & 0xFF]) * (REC - 32):
        return f"bulk block {block}: fill torn (gen {gen} n {n})"
    return None


def main(argv):
    live = "--live" in argv
    args = [a for a in argv if a != "--live"]
    if len(args) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    image, logs = args[0], args[1:]
    acks = {}
    for log in logs:
        try:
            text = open(log, "rb").read()
        except FileNotFoundError:
            continue
        for g, s in ACK.findall(text):
            acks.setdefault(int(g), set()).add(int(s))
    # The disk after the logs: a write acknowledged in them had returned
    # before this read, also while the guest runs (--live).
    data = open(image, "rb").read()
    records, damaged, slots = {}, [], None
    blocks = len(data) // REC
    for slot in range(min(SLOTS, blocks)):
        r = parse(slot, data[slot * REC : (slot + 1) * REC])
        if isinstance(r, str):
            damaged.append((slot, r))
        elif r is not None:
            records[slot] = r
            slots = r[2]
    gens = {r[0] for r in records.values()} | set(acks)
    if not gens:
        print("journal: no records and no acknowledged writes")
        return 1
    gen = max(gens)
    mine = {slot: seq for slot, (g, seq, _) in records.items() if g == gen}
    top = max(mine.values(), default=0)
    acked = acks.get(gen, set())
    problems = []
    for slot, why in damaged:
        # The write in flight when a running guest's disk was read.
        if live and slots and slot == (top + 1) % slots:
            continue
        problems.append(why)
    bulk = 0
    for b in range(SLOTS, blocks):
        rec = data[b * REC : (b + 1) * REC]
        bulk += rec[:8] == BULK
        why = None if live else bulk_damage(b, rec)
        if why:
            problems.append(why)
    if acked and top < max(acked):
        problems.append(f"gen {gen}: newest seq on disk {top} < last acknowledged {max(acked)}")
    lost = [s for s in sorted(acked) if slots and not (mine.get(s % slots, -1) >= s and (mine[s % slots] - s) % slots == 0)]
    if lost:
        problems.append(f"gen {gen}: {len(lost)} acknowledged writes missing, first seq {lost[0]}")
    summary = (f"journal gen={gen}: {len(acked)} writes acknowledged (last {max(acked, default=0)}), "
               f"newest on disk {top}, {len(records)} valid slots of {min(SLOTS, blocks)}"
               + (f", {bulk} bulk blocks" if bulk else ""))
    if problems:
        print(f"{summary}; LOST OR DAMAGED: " + "; ".join(problems[:5]))
        return 1
    print(f"{summary}; ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
