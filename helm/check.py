#!/usr/bin/env python3
"""Lints the gridroute chart and renders it with the default values (plus the one value that
has no default: where callers' credentials are verified) and every example values file in
helm/gridroute/ci/, through the Helm SDK (PyPI helm-python-sdk: no helm binary), then validates
every rendered manifest offline with kubernetes-validate --strict. Also checks that the chart
refuses to render without any way to authenticate callers, and that every GRIDROUTE_*
variable it sets is one that gridroute reads (a misspelt name would be ignored silently).

Run by `make deploy-check` (part of `make test`). Needs: pip install helm-python-sdk==0.2.2
kubernetes-validate==1.37.0 (.ci/run installs them).
"""

import pathlib
import re
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parent / "gridroute"
# The binary's sources: every environment variable it reads is named there as a string
# (a flag's `env = "…"`, or read directly, as the health check's GRIDROUTE_CA_CERT).
SOURCES = pathlib.Path(__file__).resolve().parent.parent / "services" / "gridroute" / "src"
KUBE_VERSION = "1.33"
# Custom resources kubernetes-validate has no schema for: checked for shape here instead.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}


def fail(msg: str) -> None:
    print(f"helm check: {msg}", file=sys.stderr)
    sys.exit(1)


def leaf_keys(d: dict, prefix: str = "") -> list:
    """Dotted names of the values a user sets (maps of free-form content count as one)."""
    free = {"resources", "annotations", "labels", "files", "podSecurityContext", "containerSecurityContext"}
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in free:
            out += leaf_keys(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


# The value without a default: the chart refuses to render a deployment nobody can call.
REQUIRED = {"auth": {"jwks": {"url": "https://idp.example.gov/.well-known/jwks.json"}}}


def merged(values: dict) -> dict:
    out = dict(REQUIRED)
    out.update(values)
    return out


def main() -> None:
    report = helm.lint(str(CHART), REQUIRED, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    if problems:
        fail(f"lint: {problems}")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    undocumented = [k for k in leaf_keys(values) if f"`{k}`" not in readme]
    if undocumented:
        fail(f"values not described in helm/gridroute/README.md: {undocumented}")
    cases = [("default", REQUIRED)] + [
        (f.name, merged(yaml.safe_load(f.read_text()) or {})) for f in sorted((CHART / "ci").glob("*.yaml"))
    ]
    known = {
        m
        for f in SOURCES.rglob("*.rs")
        for m in re.findall(r'"(GRIDROUTE_[A-Z0-9_]+)"', f.read_text())
    }
    if not known:
        fail(f"no GRIDROUTE_* variables found in {SOURCES}")
    chart = helm.Chart.load(str(CHART))
    try:
        chart.render({}, name="gridroute", namespace="city")
        fail("the chart rendered without any way to authenticate callers")
    except Exception as e:  # the SDK raises the template's fail() message
        if "auth:" not in str(e):
            fail(f"rendering without auth failed for another reason: {e}")
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, values in cases:
            rendered = chart.render(values, name="gridroute", namespace="city")
            kinds = set()
            for path, text in sorted(rendered.items()):
                if path.endswith("NOTES.txt") or not text.strip():
                    continue
                for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
                    kinds.add(doc["kind"])
                    if doc["kind"] == "Deployment":
                        for c in doc["spec"]["template"]["spec"]["containers"]:
                            for e in c.get("env", []):
                                if e["name"].startswith("GRIDROUTE_") and e["name"] not in known:
                                    fail(f"{name}: {path}: {e['name']} is not a variable gridroute reads")
                    if doc["kind"] in CUSTOM_KINDS:
                        if not doc.get("spec") or not doc["metadata"].get("name"):
                            fail(f"{name}: {path}: {doc['kind']} without spec or name")
                        continue
                    out = pathlib.Path(tmp) / f"{name}-{pathlib.Path(path).stem}-{i}.yaml"
                    out.write_text(yaml.safe_dump(doc))
                    files.append(out)
                    total += 1
            for needed in ("Deployment", "Service", "ServiceAccount"):
                if needed not in kinds:
                    fail(f"{name}: no {needed} rendered")
            print(f"rendered {name}: {', '.join(sorted(kinds))}")
        result = subprocess.run(
            ["kubernetes-validate", "--strict", "-k", KUBE_VERSION, *map(str, files)],
            capture_output=True,
            text=True,
        )
        print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "")
        if result.returncode != 0:
            fail(f"kubernetes-validate:\n{result.stdout}{result.stderr}")
    print(f"helm check: lint clean, {len(cases)} value sets, {total} manifests valid for Kubernetes {KUBE_VERSION}")


if __name__ == "__main__":
    main()
