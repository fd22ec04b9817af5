#!/usr/bin/env python3
"""Where a kernel's time goes, per source line, from an Nsight Compute source export.

Input: the CSV of `ncu --import R.ncu-rep --page source --csv --print-source cuda,sass` for a
build with -lineinfo (tools/device-quick.sh ncu-src writes it). Output: the warp-stall samples by
reason over the whole kernel, then the source lines with the most samples (share of all samples,
instructions executed, file:line, the line's text, its three largest stall reasons), and with
--instructions the lines with the most instructions executed instead. With --functions SRC_DIR
the same shares per enclosing function of the sources under SRC_DIR (a line belongs to the last
definition that starts above it; a kernel is cut at its "// ---- phase N ----" comments), with
each function's share of "no instruction" stalls.

  python3 tools/ncu_lines.py OUT/kernel_source.csv [--top 40] [--instructions] [--functions cuda]
"""
import argparse
import collections
import csv
import os
import re
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--instructions", action="store_true", help="rank lines by instructions executed")
    ap.add_argument("--functions", metavar="SRC_DIR", help="sum per enclosing function of the sources in SRC_DIR")
    args = ap.parse_args()

    header, current_file = None, None
    lines = {}  # (file, line) -> [samples, instructions, Counter(stall reason), text]
    reasons = collections.Counter()
    with open(args.csv, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            if row[0] == "File Path":
                current_file = row[1].split("/")[-1]
                continue
            if row[0] == "Line No":
                header = row
                continue
            if header is None:
                continue
            try:
                line_no = int(row[0])
            except ValueError:
                continue  # function names and SASS-only rows
            fields = dict(zip(header, row))

            def number(name):
                try:
                    return int(fields.get(name) or 0)
                except ValueError:
                    return 0

            entry = lines.setdefault((current_file, line_no), [0, 0, collections.Counter(), row[1].strip()])
            entry[0] += number("Warp Stall Sampling (All Samples)")
            entry[1] += number("Instructions Executed")
            for name, value in zip(header, row):
                if name.startswith("stall_") and "Not Issued" not in name:
                    try:
                        v = int(value)
                    except ValueError:
                        continue
                    entry[2][name[6:]] += v
                    reasons[name[6:]] += v

    total_samples = sum(e[0] for e in lines.values()) or 1
    total_instr = sum(e[1] for e in lines.values()) or 1
    if not lines:
        sys.exit("no source rows found: was the binary built with -lineinfo?")
    print(f"samples {total_samples}, instructions {total_instr}; stalls: " +
          ", ".join(f"{k} {100 * v / total_samples:.1f}%" for k, v in reasons.most_common(8)))
    if args.functions:
        by_function(lines, args.functions, total_samples, total_instr, args.top)
        return
    key = (lambda kv: -kv[1][1]) if args.instructions else (lambda kv: -kv[1][0])
    for (fname, line_no), (samples, instr, why, text) in sorted(lines.items(), key=key)[: args.top]:
        top = ", ".join(f"{k} {v}" for k, v in why.most_common(3))
        print(f"{100 * samples / total_samples:5.1f}% {100 * instr / total_instr:5.1f}%i {fname}:{line_no} | {text[:70]} | {top}")


DEFINITION = re.compile(r"^[A-Za-z_][^;#/(]*?\b(\w+)\s*\(")  # a line at column 0 naming a function
NOT_NAMES = {"__launch_bounds__", "if", "for", "while", "switch", "return", "sizeof", "defined"}
PHASE = re.compile(r"//\s*-+\s*(phase \d)\s*-+")


def called_name(text):
    """The first name followed by "(" on a line that is not a keyword or __launch_bounds__, or None."""
    return next((w for w in re.findall(r"(\w+)\s*\(", text) if w not in NOT_NAMES), None)


def enclosing_names(path):
    """Line number -> the name of the definition (or kernel phase) it lies in."""
    names, current, pending = {}, "(file scope)", False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, text in enumerate(f, 1):
                if pending:  # the line after `__global__ void __launch_bounds__(…)` names the kernel
                    current, pending = called_name(text) or current, False
                elif DEFINITION.match(text) and not text.startswith(("template", "namespace", "struct", "class")):
                    name = called_name(text)
                    pending = name is None and "__launch_bounds__" in text
                    current = name or current
                p = PHASE.search(text)
                if p:
                    current = current.split(":")[0] + ":" + p.group(1)
                names[n] = current
    except OSError:
        pass
    return names


def by_function(lines, src_dir, total_samples, total_instr, top):
    maps, sums = {}, collections.defaultdict(lambda: [0, 0, 0])
    for (fname, line_no), (samples, instr, why, _) in lines.items():
        if fname not in maps:
            maps[fname] = enclosing_names(os.path.join(src_dir, fname))
        name = f"{fname}:{maps[fname].get(line_no, '?')}"
        sums[name][0] += samples
        sums[name][1] += instr
        sums[name][2] += why.get("no_inst", 0)
    print("samples  instr  no-inst  function")
    for name, (samples, instr, noi) in sorted(sums.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{100 * samples / total_samples:6.1f}% {100 * instr / total_instr:5.1f}%i {100 * noi / max(samples, 1):5.0f}%  {name}")


if __name__ == "__main__":
    main()
