#!/usr/bin/env python3
"""Redis memory per incident by kind of key: `memory_by_key.py PORT INCIDENTS`.

Scans the keys of the redis-server on 127.0.0.1:PORT, groups them by kind (the key name's first
three parts, its partition replaced: `gr:{p3}:inc:01J…-3` and `gr:{p0}:ix:region:640202`
count as `gr:{P}:inc` and `gr:{P}:ix`), sums
`MEMORY USAGE … SAMPLES 0` over up to 500 keys of each kind (scaled to the kind's key count)
and prints bytes per incident for each kind, largest first (for streams also their entries per
incident). Uses redis-cli only.
"""

import collections
import re
import subprocess
import sys


def redis(port, commands):
    out = subprocess.run(
        ["redis-cli", "-p", port], input="".join(commands), capture_output=True, text=True
    ).stdout
    return out.split("\n")


def kind(key):
    key = re.sub(r"\{p\d+\}", "{P}", key)
    parts = key.split(":")
    return ":".join(parts[:3]) if len(parts) > 3 else key


def main():
    port, incidents = sys.argv[1], max(int(sys.argv[2]), 1)
    keys = subprocess.run(
        ["redis-cli", "-p", port, "--scan"], capture_output=True, text=True
    ).stdout.split("\n")
    groups = collections.defaultdict(list)
    for k in filter(None, keys):
        groups[kind(k)].append(k)
    rows = []
    for name, members in groups.items():
        sample = members[:500]
        sizes = redis(port, [f'MEMORY USAGE "{k}" SAMPLES 0\n' for k in sample])
        total = sum(int(s) for s in sizes if s.strip().isdigit())
        # Streams: their entries per incident too (all keys of the kind).
        types = redis(port, [f'TYPE "{sample[0]}"\n'])
        entries = ""
        if types and types[0].strip() == "stream":
            lengths = redis(port, [f'XLEN "{k}"\n' for k in members])
            n = sum(int(x) for x in lengths if x.strip().isdigit())
            entries = f"{n / incidents:.2f}"
        rows.append((total * len(members) / len(sample), name, len(members), entries))
    rows.sort(reverse=True)
    print(f"{'bytes/incident':>14}  {'keys':>7}  {'entries/incident':>16}  kind")
    for size, name, n, entries in rows:
        if size / incidents >= 1:
            print(f"{size / incidents:14.0f}  {n:7d}  {entries:>16}  {name}")
    print(f"{sum(r[0] for r in rows) / incidents:14.0f}  {'':7}  {'':16}  all keys (MEMORY USAGE)")


if __name__ == "__main__":
    main()
