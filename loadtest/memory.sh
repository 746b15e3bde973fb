#!/usr/bin/env bash
# Redis memory per incident (issue 13: ≤ 2.5 KB), deterministic enough to compare builds: one
# gridroute (API and router) on a private redis-server, the load tester's e2e scenario at
# MEMORY_RATE reports/s for MEMORY_SECONDS with a subscriber per department reading, then
# used_memory's growth over the incidents received and the breakdown by kind of key
# (loadtest/memory_by_key.py). `make memory` runs it; results in target/memory/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/memory"
mkdir -p "$out"
[ "${NO_BUILD:-0}" = 1 ] || cargo build -q --release -p gridroute -p gridroute-loadtest
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
start_redis "$out/redis.log"
serve_gridroute "redis://127.0.0.1:$rport/" "$out/serve.log"
used() { redis-cli -p "$rport" info memory | awk -F: '/^used_memory:/{print $2+0}'; }
m0=$(used)
"$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate "${MEMORY_RATE:-2000}" \
  --duration "${MEMORY_SECONDS:-10}s" --drain 10s --duplicate-share 0 --json "$out/e2e.json" >"$out/e2e.txt" 2>&1
sleep 2
m1=$(used)
received=$(python3 -c "import json; print(json.load(open('$out/e2e.json'))['endToEnd']['received'])")
echo "used_memory grew by $((m1 - m0)) bytes over $received incidents: $(((m1 - m0) / received)) bytes per incident"
python3 loadtest/memory_by_key.py "$rport" "$received" | tee "$out/memory.txt"
