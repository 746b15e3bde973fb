#!/usr/bin/env python3
"""Checks that every GRIDROUTE_* variable the plain-VM environment file names (set or commented
out as an example) is one that gridroute reads: a misspelt name would be ignored silently and
the service would run on the default. The Helm chart's variables are checked by helm/check.py."""

import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
known = {
    m
    for f in (root / "services" / "gridroute" / "src").rglob("*.rs")
    for m in re.findall(r'"(GRIDROUTE_[A-Z0-9_]+)"', f.read_text())
}
env = root / "deploy" / "systemd" / "gridroute.env"
named = re.findall(r"^#?(GRIDROUTE_[A-Z0-9_]+)=", env.read_text(), flags=re.M)
unknown = sorted(set(named) - known)
if not known or not named or unknown:
    print(f"{env.relative_to(root)}: variables gridroute does not read: {unknown or 'none found'}", file=sys.stderr)
    sys.exit(1)
print(f"{env.relative_to(root)}: {len(set(named))} variables, each one gridroute reads")
