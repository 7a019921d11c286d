#!/usr/bin/env python3
"""Print criterion medians per group, side by side, with ratios to zonealloc.

Usage: python3 benches/summarize.py [GROUP_PREFIX...]
Reads target/criterion/<group>/<allocator>/<param>/new/estimates.json.
"""
import json
import pathlib
import sys

root = pathlib.Path("target/criterion")
prefixes = sys.argv[1:]


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.1f} ns"


for group in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "report"):
    if prefixes and not any(group.name.startswith(x) for x in prefixes):
        continue
    rows = []
    for est in sorted(group.glob("*/*/new/estimates.json")):
        allocator = est.parts[-4]
        median = json.loads(est.read_text())["median"]["point_estimate"]
        bench = json.loads((est.parent / "benchmark.json").read_text())
        tp = bench.get("throughput") or {}
        per = tp.get("Elements") or 1
        rows.append((allocator, median, median / per))
    if not rows:
        continue
    base = next((r[2] for r in rows if r[0] == "zonealloc"), None)
    print(f"\n{group.name}")
    print(f"  {'allocator':<26}{'median/op':>12}  {'vs zonealloc':>12}")
    for allocator, median, per_op in rows:
        ratio = f"{per_op / base:.2f}x" if base else ""
        print(f"  {allocator:<26}{fmt(per_op):>12}  {ratio:>12}")
