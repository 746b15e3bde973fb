#!/usr/bin/env bash
# What waiting for a replica costs a report: a primary and its replica on this machine, one
# gridroute (API and router) with and without `--wait-replicas 1`, alternating for a few rounds;
# the load tester sends reports open loop at a fixed rate and prints the call latency. Figures
# only; nothing fails on timing. `make replication-cost` runs it; results in
# target/replication-cost/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/replication-cost"
mkdir -p "$out"
cargo build -q --release -p gridroute -p gridroute-loadtest
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
seconds=${REPLICATION_COST_SECONDS:-10}
rounds=${REPLICATION_COST_ROUNDS:-3}
rate=${REPLICATION_COST_RATE:-2000}
pport=$(free_port)
qport=$(free_port)
redis-server --port "$pport" "${redis_flags[@]}" >"$out/primary.log" 2>&1 &
ppid=$!
redis-server --port "$qport" "${redis_flags[@]}" --replicaof 127.0.0.1 "$pport" >"$out/replica.log" 2>&1 &
qpid=$!
trap 'kill $ppid $qpid 2>/dev/null; wait 2>/dev/null || true' EXIT
sleep 1

# $1: label, then extra flags of gridroute serve.
run() {
  local label=$1
  shift
  local grpc; grpc=$(free_port)
  "$target/gridroute" serve "${serve_auth[@]}" "${unlimited[@]}" --redis-url "redis://127.0.0.1:$pport/" \
    --grpc-addr "127.0.0.1:$grpc" --http-addr off --metrics-addr off "$@" >"$out/$label.log" 2>&1 &
  local gr=$!
  wait_health "$target/gridroute" "$grpc"
  "$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario report --rate "$rate" \
    --duration "${seconds}s" --duplicate-share 0 --json "$out/$label.json" >"$out/$label.txt" 2>&1
  kill "$gr"; wait "$gr" 2>/dev/null || true
  redis-cli -p "$pport" flushall >/dev/null
  python3 - "$out/$label.json" "$label" <<'PY'
import json, sys
path, label = sys.argv[1], sys.argv[2]
r = json.load(open(path))
lat = {d["percentage"]: d["latency"] / 1e6 for d in r["latencyDistribution"]}
print(f"{label:12} p50 {lat[50]:6.2f} ms  p99 {lat[99]:6.2f} ms  p99.9 {lat[99.9]:6.2f} ms  ({r['rps']:.0f} calls/s, {r['errorRate']*100:.2f} % errors)")
PY
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round ($rate reports/s for ${seconds}s)"
  run "async-$round"
  run "wait1-$round" --wait-replicas 1
done
