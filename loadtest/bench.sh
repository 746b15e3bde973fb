#!/usr/bin/env bash
# The short load test of `make bench`: release builds, `gridroute dev` (its own redis-server),
# then the ceilings and the service side by side: echo (bare tonic), the Redis-only ceiling of
# our command mix, unary reports, and end to end at 2,000/s. Writes loadtest results to
# target/bench-load/ (JSON and HTML). Figures only; nothing fails on timing.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/bench-load"
mkdir -p "$out"
cargo build -q --release -p gridroute -p gridroute-loadtest
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
echo "== echo: the gRPC framework's ceiling"
"$target/gridroute-loadtest" --scenario echo --concurrency 64 --duration 5s --json "$out/echo.json"
echo "== Redis-only ceiling of the routed command mix"
"$target/gridroute-redisceiling" --seconds 5
grpc=$(free_port); metrics=$(free_port)
"$target/gridroute" dev "${unlimited[@]}" --grpc-addr "127.0.0.1:$grpc" --http-addr off --metrics-addr "127.0.0.1:$metrics" >"$out/dev.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
wait_health "$target/gridroute" "$grpc"
echo "== unary reports, closed loop (API and router in one process)"
"$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario report --concurrency 64 --duration 5s \
  --json "$out/report.json"
sleep 3
echo "== end to end, open loop 2,000/s"
"$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate 2000 --duration 10s \
  --json "$out/e2e.json" --html "$out/e2e.html"
kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
echo "== unary reports accepted by an API process alone (routers stopped: reports queue)"
redis=$(free_port); grpc=$(free_port); metrics=$(free_port)
redis-server --port "$redis" "${redis_flags[@]}" >"$out/redis.log" 2>&1 &
rpid=$!
"$target/gridroute" serve "${serve_auth[@]}" "${unlimited[@]}" --redis-url "redis://127.0.0.1:$redis/" --role api --grpc-addr "127.0.0.1:$grpc" \
  --http-addr off --metrics-addr "127.0.0.1:$metrics" >"$out/api.log" 2>&1 &
pid=$!
trap 'kill $pid $rpid 2>/dev/null; wait $pid $rpid 2>/dev/null || true' EXIT
wait_health "$target/gridroute" "$grpc"
"$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario report --concurrency 64 --duration 5s \
  --json "$out/report-api.json"
echo "results in $out"
