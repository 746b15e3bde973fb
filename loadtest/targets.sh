#!/usr/bin/env bash
# The issue-5 targets side by side with their ceilings, in one run (about 3 minutes): echo, the
# Redis-only ceiling with Redis CPU per routed incident, an API process alone, unary with
# routing, end to end open loop at 2,000 / 5,000 / 10,000 reports/s, and e2e-batch at 10,000/s
# for 60 s and 14,000 / 17,000/s for 10 s (30 s drain: a dispatch counts as lost only when it
# has not arrived 30 s after the load), then the ratios. Figures only; nothing fails on timing.
# Results (text, JSON) in target/targets/. Everything runs on this machine, as the issue asks.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/targets"
mkdir -p "$out"
cargo build -q --release -p gridroute -p gridroute-loadtest
lt="$target/gridroute-loadtest"
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
summary() { grep -E "throughput|latency|report → dispatch|status codes" "$1" | sed 's/^/    /'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT

echo "== echo: the gRPC framework's ceiling"
"$lt" --scenario echo --concurrency 64 --duration 10s --json "$out/echo.json" >"$out/echo.txt" 2>&1
summary "$out/echo.txt"

echo "== Redis-only ceiling of the routed command mix, and Redis CPU per routed incident"
rport=$(free_port)
redis-server --port "$rport" "${redis_flags[@]}" >"$out/redis.log" 2>&1 &
pids+=($!)
sleep 0.5
c0=$(redis_cpu "$rport")
"$target/gridroute-redisceiling" --redis-url "redis://127.0.0.1:$rport/" --seconds 8 | tail -1 | tee "$out/ceiling.txt"
c1=$(redis_cpu "$rport")
rate=$(grep -o '[0-9]* incidents/s' "$out/ceiling.txt" | cut -d' ' -f1)
python3 -c "print(f'    Redis CPU per routed incident: {1e6*($c1-$c0)/($rate*8):.1f} µs')"
redis-cli -p "$rport" flushall >/dev/null

echo "== unary reports accepted by an API process alone (no router: reports queue)"
grpc=$(free_port)
"$target/gridroute" serve "${serve_auth[@]}" "${unlimited[@]}" --redis-url "redis://127.0.0.1:$rport/" --role api --grpc-addr "127.0.0.1:$grpc" \
  --http-addr off --metrics-addr "127.0.0.1:$(free_port)" >"$out/api.log" 2>&1 &
api=$!
pids+=($api)
wait_health "$target/gridroute" "$grpc"
"$lt" --addr "http://127.0.0.1:$grpc" --scenario report --concurrency 64 --duration 10s \
  --json "$out/report-api.json" >"$out/report-api.txt" 2>&1
summary "$out/report-api.txt"
kill "$api"; wait "$api" 2>/dev/null || true

grpc=$(free_port)
"$target/gridroute" dev "${unlimited[@]}" --grpc-addr "127.0.0.1:$grpc" --http-addr off --metrics-addr "127.0.0.1:$(free_port)" >"$out/dev.log" 2>&1 &
pids+=($!)
wait_health "$target/gridroute" "$grpc"
addr="http://127.0.0.1:$grpc"
echo "== unary reports, closed loop (API and router in one process)"
"$lt" --addr "$addr" --scenario report --concurrency 64 --duration 10s --json "$out/report.json" >"$out/report.txt" 2>&1
summary "$out/report.txt"
sleep 3
for rate in 2000 5000 10000; do
  echo "== end to end, unary, open loop $rate/s for 15 s"
  "$lt" --addr "$addr" --scenario e2e --rate "$rate" --duration 15s --drain 30s --json "$out/e2e-$rate.json" >"$out/e2e-$rate.txt" 2>&1
  summary "$out/e2e-$rate.txt"
  sleep 3
done
for run in 10000:60s 14000:10s 17000:10s; do
  rate=${run%%:*} duration=${run#*:}
  echo "== end to end, batches of 100, $rate/s for $duration"
  "$lt" --addr "$addr" --scenario e2e-batch --batch-size 100 --rate "$rate" --duration "$duration" \
    --drain 30s --json "$out/e2e-batch-$rate.json" >"$out/e2e-batch-$rate.txt" 2>&1
  summary "$out/e2e-batch-$rate.txt"
  sleep 5
done
echo "== side by side"
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
load = lambda name: json.load(open(f"{out}/{name}.json"))
ms = lambda ns: ns / 1e6
def e2e_q(d, pct):
    return next(x["latency"] for x in d["endToEnd"]["latencyDistribution"] if x["percentage"] == pct)
echo = load("echo")["rps"]
ceiling = float(re.search(r"([0-9]+) incidents/s", open(f"{out}/ceiling.txt").read()).group(1))
for name, label in [("report-api", "unary, API process alone"), ("report", "unary, API and router in one process")]:
    rps = load(name)["rps"]
    print(f"  {label}: {rps:,.0f}/s = {100 * rps / echo:.0f} % of echo ({echo:,.0f}/s)")
for rate in (2000, 5000, 10000):
    d = load(f"e2e-{rate}")
    print(f"  e2e open loop {rate:,}/s: report → dispatch p99 {ms(e2e_q(d, 99.0)):.1f} ms, "
          f"p99.9 {ms(e2e_q(d, 99.9)):.1f} ms, lost {d['endToEnd']['lost']}")
for rate in (10000, 14000, 17000):
    d = load(f"e2e-batch-{rate}")
    print(f"  e2e-batch {rate:,}/s offered = {rate / ceiling:.2f} of the Redis-only ceiling "
          f"({ceiling:,.0f} routed/s): errors {d['errorRate']:.3%}, lost {d['endToEnd']['lost']}, "
          f"report → dispatch p99 {ms(e2e_q(d, 99.0)):.0f} ms (seconds: the service fell behind)")
PY
echo "results in $out"
