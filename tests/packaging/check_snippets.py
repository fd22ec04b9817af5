#!/usr/bin/env python3
"""Checks that every code block of docs/bindings.md preceded by `<!-- snippet: PATH -->` is, line for
line, the region between the `snippet-begin` and `snippet-end` marker lines of PATH (a tested file).
Usage: check_snippets.py <repo-root>"""
import re
import sys

root = sys.argv[1]
blocks = []
for name in ("docs/bindings.md", "README.md"):
    doc = open(f"{root}/{name}", encoding="utf-8").read()
    found = re.findall(r"<!-- snippet: (\S+) -->\s*```\w*\n(.*?)```", doc, re.S)
    if not found:
        sys.exit(f"check_snippets: no snippet blocks in {name}")
    blocks += [(name, path, block) for path, block in found]
bad = 0
for doc_name, path, block in blocks:
    lines = open(f"{root}/{path}", encoding="utf-8").read().splitlines()
    begin = next(i for i, l in enumerate(lines) if "snippet-begin" in l)
    end = next(i for i, l in enumerate(lines) if "snippet-end" in l)
    region = lines[begin + 1:end]
    # The C region is indented inside main(): compare without the common indentation.
    indent = min((len(l) - len(l.lstrip()) for l in region if l.strip()), default=0)
    region = [l[indent:] for l in region]
    while region and not region[-1].strip():
        region.pop()
    if region != block.rstrip("\n").splitlines():
        print(f"check_snippets: {doc_name} differs from {path} (snippet-begin..snippet-end)")
        bad += 1
    else:
        print(f"check_snippets: {doc_name}: {path}: {len(region)} lines match")
sys.exit(1 if bad else 0)
