#!/usr/bin/env bash
# Checks the deployment artefacts: alert rules (promtool check + unit tests), dashboard and
# alerts against the exported metric names, the Helm chart (lint, render with every values
# file through the Helm SDK, kubernetes-validate --strict, every GRIDROUTE_* variable one
# gridroute reads), the Dockerfile, the plain-VM environment file's variable names, the OpenAPI
# document and the systemd unit. `make deploy-check` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v promtool >/dev/null || missing+=("promtool")
python3 -c 'import helm_python' 2>/dev/null || missing+=("helm-python-sdk")
command -v kubernetes-validate >/dev/null || missing+=("kubernetes-validate")
command -v openapi-spec-validator >/dev/null || missing+=("openapi-spec-validator")
if ((${#missing[@]})); then
  echo "deploy-check needs ${missing[*]}: run \`make setup-test\` (or \`make deploy-check\`, which uses its virtual environment)" >&2
  exit 1
fi
promtool check rules deploy/prometheus/alerts.yaml
(cd deploy/prometheus && promtool test rules alerts.test.yaml)
python3 deploy/check_metrics.py
python3 deploy/check_dockerfile.py
python3 deploy/check_env.py
python3 helm/check.py
# The OpenAPI document of the HTTP face (generated from the protos; a test keeps it current).
openapi-spec-validator docs/openapi.json
# The unit's ExecStart must name an executable: use the binary `make unit` just built.
bin="$(cd "${CARGO_TARGET_DIR:-target}" 2>/dev/null && pwd)/debug/gridroute"
if command -v systemd-analyze >/dev/null && [ -x "$bin" ]; then
  unit=$(mktemp -d)/gridroute.service
  sed "s#/usr/local/bin/gridroute#$bin#" deploy/systemd/gridroute.service > "$unit"
  systemd-analyze verify "$unit" && echo "systemd unit: verified"
else
  echo "systemd unit: not verified (no systemd-analyze or no built binary)"
fi
