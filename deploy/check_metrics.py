#!/usr/bin/env python3
"""Checks that the Grafana dashboard and the alert rules only use metrics gridroute exports:
every `gridroute_*` name in their expressions must be declared in the one module of metric
names (services/telemetry/src/lib.rs), histograms with their _bucket/_sum/_count series."""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
names = set(re.findall(r'pub const \w+: &str = "(gridroute_\w+)"', (ROOT / "services/telemetry/src/lib.rs").read_text()))
known = names | {n + s for n in names for s in ("_bucket", "_sum", "_count")}

exprs = []
dash = json.loads((ROOT / "deploy/grafana/gridroute.json").read_text())
for panel in dash["panels"]:
    for t in panel.get("targets", []):
        exprs.append((f"dashboard: {panel['title']}", t["expr"]))
rules = yaml.safe_load((ROOT / "helm/gridroute/files/alerts.yaml").read_text())
for group in rules["groups"]:
    for rule in group["rules"]:
        exprs.append((f"alert {rule['alert']}", rule["expr"]))
        if not rule.get("annotations", {}).get("runbook"):
            sys.exit(f"alert {rule['alert']} has no runbook")
        anchor = rule["annotations"]["runbook"].split("#")[1]
        ops = (ROOT / "docs/OPERATIONS.md").read_text().lower()
        if f"### {rule['alert'].lower()}" not in ops:
            sys.exit(f"alert {rule['alert']}: no runbook section '### {rule['alert']}' in docs/OPERATIONS.md (anchor {anchor})")

bad = [(where, m) for where, e in exprs for m in re.findall(r"gridroute_\w+", e) if m not in known]
if bad:
    sys.exit("unknown metrics: " + "; ".join(f"{w}: {m}" for w, m in bad))
print(f"metrics check: {len(exprs)} expressions use only the {len(names)} exported metrics; every alert has a runbook")
