#!/usr/bin/env bash
# Smoke load test for CI: `gridroute dev` (its own redis-server) under a few seconds of
# end-to-end load; fails on any error or any lost dispatch. No timing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/debug"
# Every target, as `make unit` builds them: the binaries then come out of that build (the same
# features of every dependency) instead of a second build with fewer features (about 2.5
# minutes of CI).
cargo build -q --workspace --all-targets --locked
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
grpc=$(free_port); metrics=$(free_port)
"$target/gridroute" dev --grpc-addr "127.0.0.1:$grpc" --http-addr off --metrics-addr "127.0.0.1:$metrics" >/tmp/gridroute-smoke.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
wait_health "$target/gridroute" "$grpc"
page="${CARGO_TARGET_DIR:-target}/smoke"
mkdir -p "$page"
"$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate 300 --duration 3s \
  --json "$page/first.json" --fail-if 'error_rate>0,lost>0'
# The HTML report, compared with the first run, checked in a real headless browser.
"$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate 300 --duration 3s \
  --json "$page/second.json" --html "$page/report.html" --compare "$page/first.json" \
  --fail-if 'error_rate>0,lost>0'
python3 loadtest/check_page.py "$page/report.html" "$page/second.json" --baseline
# An open-loop run says how late it started its calls (the load generator's own delay).
python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["sendDelay"]
assert d["latencyDistribution"] and d["slowest"] >= 1, d' "$page/second.json"
"$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario e2e-batch --batch-size 100 \
  --concurrency 2 --requests 2000 --fail-if 'error_rate>0,lost>0'
echo "smoke load test: 0 errors, 0 lost"
