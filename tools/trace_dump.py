#!/usr/bin/env python3
"""Summarise a persistent kernel's per-block trace dump (DELTACOME_GPU_PERSIST_TRACE_DUMP=FILE).

Each line of FILE: block, its start in ns after the first block's (globaltimer), then slots 1..23 in
SM cycles since the block's start (0 where unmarked; slot 6 is the start clock itself). Slots 1..5
are the phase marks (prologue, phase 1 end, barrier passed, t staged, phase 2 end); when the staged
m = 1 instance's finer marks are present, its steps from the PDL release are printed too.

Cycles become ns with --ghz (the SM clock, default 1.755), so that blocks that started at different
times compare on one axis: the grid barrier opens when the last block's phase 1 ends in absolute
time, not in cycles since its own start.

  tools/trace_dump.py FILE [--ghz 1.755] [--ranges 0:32,32:132,132:264] [--last 12]
"""
import argparse
import statistics
import sys

MARKS = {1: "prologue", 2: "phase 1 end", 3: "barrier passed", 4: "t staged", 5: "phase 2 end"}
# The staged m = 1 launch's steps (persist_kernel's finer marks): each is the median over blocks of
# slot b minus slot a, so the steps read as the launch's timeline from the PDL release (slot 1).
STEPS = [(1, 9, "x staged, V pieces in"), (9, 10, "phase 1 (warp 0)"), (10, 11, "t written, arrival"),
         (11, 3, "grid barrier"), (3, 12, "t loaded"), (4, 13, "phase 2 (warp 0)"), (1, 5, "release to block end")]


def read(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            try:
                vals = [int(v) for v in fields]
            except ValueError:
                sys.exit(f"{path}:{n}: not a trace dump line (integers expected)")
            if len(vals) < 7:
                sys.exit(f"{path}:{n}: {len(vals)} fields, a dump line has at least 7")
            rows.append(vals)
    if not rows:
        sys.exit(f"{path}: no blocks")
    return rows


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--ghz", type=float, default=1.755, help="SM clock in GHz (cycles per ns)")
    ap.add_argument("--ranges", default="", help="block ranges lo:hi,... to compare (default: quarters)")
    ap.add_argument("--last", type=int, default=12, help="how many of the last phase-1 arrivals to name")
    a = ap.parse_args()
    if a.ghz <= 0:
        sys.exit("--ghz must be positive")
    rows = read(a.file)
    at = lambda r, k: r[k + 1]  # slot k (the block index and its start come first)
    print(f"{len(rows)} blocks, starts within {max(r[1] for r in rows) / 1e3:.2f} us")
    for k, name in MARKS.items():
        v = [at(r, k) for r in rows if at(r, k)]
        if v:
            print(f"  {name:<16} cycles since start: p10 {pct(v, .1):>7} median {pct(v, .5):>7} max {max(v):>7}")
    # phase 1's end on one axis: ns after the first block's start
    end1 = sorted((r[1] + at(r, 2) / a.ghz, r[0]) for r in rows if at(r, 2))
    if end1:
        v = [e for e, _ in end1]
        print(f"  phase 1 end, ns after the first start: p10 {pct(v, .1):.0f} median {pct(v, .5):.0f} "
              f"p90 {pct(v, .9):.0f} max {v[-1]:.0f}")
        print("  last arrivals (block, ns):", ", ".join(f"{b} ({e:.0f})" for e, b in end1[-a.last:]))
        nb = max(r[0] for r in rows) + 1
        ranges = [tuple(int(x) for x in s.split(":")) for s in a.ranges.split(",") if s] or \
            [(nb * i // 4, nb * (i + 1) // 4) for i in range(4)]
        for lo, hi in ranges:
            sel = [e for e, b in end1 if lo <= b < hi]
            if sel:
                print(f"  blocks {lo}-{hi - 1}: phase 1 end median {statistics.median(sel):.0f} ns, max {max(sel):.0f}")
    steps = [(lo, hi, name, [at(r, hi) - at(r, lo) for r in rows if at(r, lo) and at(r, hi)]) for lo, hi, name in STEPS]
    if all(v for *_, v in steps):
        print("  staged m = 1 steps (median cycles):")
        for lo, hi, name, v in steps:
            print(f"    {name:<24} {f'[{lo}->{hi}]':<9} {statistics.median(v):>7.0f}")
    end = [r[1] + at(r, 5) / a.ghz for r in rows if at(r, 5)]
    if end:
        print(f"  block end, ns after the first start: median {statistics.median(end):.0f} max {max(end):.0f}")


if __name__ == "__main__":
    main()
