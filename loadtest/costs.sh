#!/usr/bin/env bash
# Issue 13's per-incident costs, each beside its floor or ceiling, measured in one run (about
# 5 minutes), then the ratios against the issue's targets. Figures only; nothing fails on
# timing. Run by `make targets` after the issue-5 figures, or alone (`make costs`); results in
# target/costs/.
#   1. Redis CPU per routed incident: gridroute's command mix beside the lean floor
#      (gridroute-redisceiling --mix gridroute / --mix lean), target ≤ 1.5×, written by the
#      scripts and by transactions (--transactions: reports queued and first dispatches
#      written with plain commands); and the mix with inline routing (--mix inline: reports
#      routed by the accepting process), written by the report script and by transactions;
#      both by transactions with --packed-events (a batch's changes in one events entry), and
#      with --packed-events --region-index-depth 2 (region index entries down to the street),
#      and with --claims-with-records too (idempotency claims without an expiry).
#   2. Router CPU per routed incident: reports queued by an API alone, drained by one router
#      process (utime + stime), target ≤ 8 µs; by the dispatch script, then by transactions.
#   3. API CPU per accepted unary report beside the echo server's CPU per call, each a process
#      of its own driven by the same load generator (loadtest/api_cost.sh, one round),
#      target ≤ 1.5×.
#   4. Capacity (closed-loop unary reports, API and router in one process), then end to end at
#      half of it, open loop: report → subscriber p99 ≤ 5 ms, p99.9 ≤ 20 ms, 0 lost; and Redis
#      memory per incident over that run (used_memory ÷ incidents, streams and indexes
#      included, subscribers reading), target ≤ 2.5 KB, and its breakdown by kind of key
#      (loadtest/memory_by_key.py). SERVE_ARGS (e.g. --inline-routing, --transactions) adds
#      flags to the service of this step and to step 3's API process; step 2 measures the
#      router of the stream path either way.
#   5. The same latency at half of the end-to-end capacity: capacity measured closed loop with
#      a subscriber per department reading (`e2e`, reports as fast as they are answered),
#      then `e2e` open loop at half of it. Step 4 takes half of the unary capacity, where no
#      subscriber competes for the machine; this step shows the latency at half of what the
#      whole flow (reports, routing and delivery) can carry on the same box. A figure beside
#      step 4's, not a replacement for it. LOADGEN_CPU=N runs this step's load tester on CPU N
#      alone and Redis and the service on the other CPUs (taskset), to see what the load
#      generator's competition for the cores adds to the latency.
# Redis Cluster scale-out is not measured here (docs/PERFORMANCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/costs"
mkdir -p "$out"
cargo build -q --release -p gridroute -p gridroute-loadtest
lt="$target/gridroute-loadtest"
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
new_redis() {
  rport=$(free_port)
  redis-server --port "$rport" "${redis_flags[@]}" >"$out/redis-$rport.log" 2>&1 &
  pids+=($!)
  sleep 0.5
}

echo "== 1. Redis CPU per routed incident: the lean floor, gridroute's mix by scripts and by transactions, inline, inline by transactions (-txp: with packed events; -txpd: and region index depth 2; -txpdc: and claims kept with their records)"
for mix in lean gridroute gridroute-tx gridroute-txp gridroute-txpd gridroute-txpdc inline inline-tx inline-txp inline-txpd inline-txpdc; do
  new_redis
  flags=(--mix "${mix%-tx*}")
  [[ $mix == *-tx* ]] && flags+=(--transactions)
  [[ $mix == *-txp* ]] && flags+=(--packed-events)
  [[ $mix == *-txpd* ]] && flags+=(--region-index-depth 2)
  [[ $mix == *-txpdc ]] && flags+=(--claims-with-records)
  "$target/gridroute-redisceiling" "${flags[@]}" --redis-url "redis://127.0.0.1:$rport/" --seconds 8 \
    | tail -1 | tee "$out/redis-$mix.txt"
done

echo "== 2. router CPU per routed incident"
ROUTER_COST_ROUNDS=1 NO_BUILD=1 bash loadtest/router_cost.sh | tail -1 | tee "$out/router.txt"
ROUTER_COST_ROUNDS=1 NO_BUILD=1 ROUTER_ARGS=--transactions bash loadtest/router_cost.sh | tail -1 \
  | tee "$out/router-tx.txt"

echo "== 3. API CPU per accepted unary report, and the echo server's CPU per call"
API_COST_ROUNDS=1 NO_BUILD=1 bash loadtest/api_cost.sh | sed -n 2p | tee "$out/api.txt"
cp "${CARGO_TARGET_DIR:-target}/api-cost/last.txt" "$out/api-echo.txt"

# An empty Redis and a new service on it (the last one started is stopped), logging to $1.log.
fresh_service() {
  redis-cli -p "$rport" flushall >/dev/null
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  serve_gridroute "redis://127.0.0.1:$rport/" "$out/$1.log"
}

echo "== 4. capacity, then end to end at half of it; Redis memory per incident"
new_redis
redis4=${pids[-1]}
serve_gridroute "redis://127.0.0.1:$rport/" "$out/serve.log"
capacity "$out/capacity"
sleep 5
fresh_service serve2
half=$(python3 -c "import json; print(max(100, int(json.load(open('$out/capacity.json'))['rps'] / 2)))")
m0=$(redis-cli -p "$rport" info memory | awk -F: '/^used_memory:/{print $2+0}')
r0=$(redis_cpu "$rport")
"$lt" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate "$half" --duration 20s --drain 30s \
  --duplicate-share 0 --json "$out/half.json" --html "$out/half.html" >"$out/half.txt" 2>&1 || true
sleep 2
m1=$(redis-cli -p "$rport" info memory | awk -F: '/^used_memory:/{print $2+0}')
r1=$(redis_cpu "$rport")
echo "$m0 $m1 $r0 $r1 $half" >"$out/half.mem"
received=$(python3 -c "import json; print(json.load(open('$out/half.json'))['endToEnd']['received'])")
python3 loadtest/memory_by_key.py "$rport" "$received" >"$out/memory.txt"

echo "== 5. end-to-end capacity (closed loop, subscribers reading), then end to end at half of it"
lt5=("$lt")
pin_service() { :; }
if [ -n "${LOADGEN_CPU:-}" ]; then
  others=$(python3 -c "import os; print(','.join(str(c) for c in sorted(os.sched_getaffinity(0)) if c != $LOADGEN_CPU))")
  lt5=(taskset -c "$LOADGEN_CPU" "$lt")
  # Every thread of step 4's Redis and of the service just started.
  pin_service() { taskset -a -pc "$others" "$redis4" >/dev/null; taskset -a -pc "$others" "${pids[-1]}" >/dev/null; }
  echo "   the load tester on CPU $LOADGEN_CPU, Redis and the service on CPUs $others"
fi
fresh_service serve3
pin_service
"${lt5[@]}" --addr "http://127.0.0.1:$grpc" --scenario e2e --concurrency 64 --duration 10s --drain 30s \
  --duplicate-share 0 --json "$out/capacity-e2e.json" >"$out/capacity-e2e.txt" 2>&1 || true
fresh_service serve4
pin_service
half_e2e=$(python3 -c "import json; print(max(100, int(json.load(open('$out/capacity-e2e.json'))['rps'] / 2)))")
"${lt5[@]}" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate "$half_e2e" --duration 20s --drain 30s \
  --duplicate-share 0 --json "$out/half-e2e.json" >"$out/half-e2e.txt" 2>&1 || true

echo "== issue 13: figures beside their floors or ceilings, and the targets"
python3 - "$out" "${SERVE_ARGS:-}" <<'PY'
import json, re, sys
out = sys.argv[1]
load = lambda name: json.load(open(f"{out}/{name}.json"))
def redis_us(mix):
    return float(re.search(r"Redis CPU ([0-9.]+) µs", open(f"{out}/redis-{mix}.txt").read()).group(1))
lean, mix = redis_us("lean"), redis_us("gridroute")
print(f"  Redis CPU per routed incident: gridroute {mix:.1f} µs, lean floor {lean:.1f} µs: "
      f"{mix / lean:.2f}× (target ≤ 1.5×), written by transactions {redis_us('gridroute-tx'):.1f} µs: "
      f"{redis_us('gridroute-tx') / lean:.2f}×, with packed events {redis_us('gridroute-txp'):.1f} µs: "
      f"{redis_us('gridroute-txp') / lean:.2f}×, and region index depth 2 {redis_us('gridroute-txpd'):.1f} µs: "
      f"{redis_us('gridroute-txpd') / lean:.2f}×, and claims kept with their records "
      f"{redis_us('gridroute-txpdc'):.1f} µs: {redis_us('gridroute-txpdc') / lean:.2f}×; "
      f"with inline routing {redis_us('inline'):.1f} µs: "
      f"{redis_us('inline') / lean:.2f}×, written by transactions {redis_us('inline-tx'):.1f} µs: "
      f"{redis_us('inline-tx') / lean:.2f}×, with packed events {redis_us('inline-txp'):.1f} µs: "
      f"{redis_us('inline-txp') / lean:.2f}×, and region index depth 2 {redis_us('inline-txpd'):.1f} µs: "
      f"{redis_us('inline-txpd') / lean:.2f}×, and claims kept with their records "
      f"{redis_us('inline-txpdc'):.1f} µs: {redis_us('inline-txpdc') / lean:.2f}×")
router_us = lambda name: float(re.search(r"= ([0-9.]+) µs per incident", open(f"{out}/{name}.txt").read()).group(1))
router = router_us("router")
print(f"  router CPU per routed incident: {router:.1f} µs (target ≤ 8 µs); "
      f"dispatching by transactions {router_us('router-tx'):.1f} µs")
echo, echo_rps, api, api_rps = map(float, open(f"{out}/api-echo.txt").read().split())
print(f"  API CPU per accepted report {api:.1f} µs ({api_rps:,.0f}/s), echo server {echo:.1f} µs per call "
      f"({echo_rps:,.0f}/s): {api / echo:.2f}× (target ≤ 1.5×)")
cap = load("capacity")["rps"]
half = load("half")
m0, m1, r0, r1, rate = map(float, open(f"{out}/half.mem").read().split())
e2e = half["endToEnd"]
# A percentile of one of a run's distributions (`endToEnd`, `sendDelay`), in ms.
at = lambda part, pct: next(x["latency"] for x in part["latencyDistribution"] if x["percentage"] == pct) / 1e6
q = lambda pct: at(e2e, pct)
# How late the load generator started its calls: part of every latency it reports.
late = lambda run: at(run["sendDelay"], 99.0)
n = max(e2e["received"], 1)
serve = "API and router in one process" + (", " + sys.argv[2] if sys.argv[2] else "")
print(f"  capacity {cap:,.0f} reports/s (closed loop, {serve}); at half, "
      f"{rate:,.0f}/s open loop: report → subscriber p99 {q(99.0):.1f} ms (target ≤ 5), "
      f"p99.9 {q(99.9):.1f} ms (target ≤ 20), lost {e2e['lost']} (target 0); "
      f"the load generator's own send delay p99 {late(half):.1f} ms")
print(f"  Redis memory per incident over that run: {(m1 - m0) / n:,.0f} bytes (target ≤ 2,500); "
      f"Redis CPU per incident, subscribers reading: {(r1 - r0) * 1e6 / n:.1f} µs")
cap_e2e = load("capacity-e2e")
half_e2e = load("half-e2e")
qe = lambda run, pct: at(run["endToEnd"], pct)
print(f"  end-to-end capacity {cap_e2e['rps']:,.0f} reports/s (closed loop, subscribers reading; "
      f"report → subscriber p99 {qe(cap_e2e, 99.0):.1f} ms in that run); at half, "
      f"{cap_e2e['rps'] / 2:,.0f}/s open loop: p99 {qe(half_e2e, 99.0):.1f} ms, "
      f"p99.9 {qe(half_e2e, 99.9):.1f} ms, lost {half_e2e['endToEnd']['lost']}; "
      f"send delay p99 {late(half_e2e):.1f} ms")
print("  Redis Cluster scale-out: `make cluster-costs` (which `make targets` runs next)")
PY
echo "  Redis memory per incident by kind of key (MEMORY USAGE, that run):"
sed 's/^/  /' "$out/memory.txt"
echo "results in $out"
