#!/usr/bin/env bash
# API CPU per accepted unary report beside the echo server's CPU per call (issue 13: ≤ 1.5×),
# in API_COST_ROUNDS alternating rounds: each round runs the echo server process, then an API
# process alone (`--role api`, reports queue in Redis), each driven by the same load generator
# (`--scenario report`, 64 in flight, API_COST_SECONDS per run); CPU is utime + stime of the
# server process over the calls it answered OK, so the figure does not depend on how many cores
# the load generator takes. With PERF=1 the API process of the last round is sampled by
# `perf record -g` and the top of `perf report` is printed. Figures only; nothing fails on
# timing. `make api-cost` runs it (and `make costs`, one round); results in target/api-cost/,
# the last round's figures as `echo-µs echo-calls/s api-µs api-calls/s` in last.txt.
# SERVE_ARGS adds flags to the API process: with SERVE_ARGS=--inline-routing it routes and
# dispatches each report in its own call, so the difference from a run without is the CPU that
# routing costs per incident on the inline path.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/api-cost"
mkdir -p "$out"
[ "${NO_BUILD:-0}" = 1 ] || cargo build -q --release -p gridroute -p gridroute-loadtest
lt="$target/gridroute-loadtest"
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
rounds=${API_COST_ROUNDS:-3}
seconds=${API_COST_SECONDS:-8}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# CPU µs per OK call of process $1 while the load generator drives $2; prints "µs rps".
drive() {
  local pid=$1 addr=$2 name=$3 c0 c1
  c0=$(cpu "$pid")
  "$lt" --addr "$addr" --scenario report --concurrency 64 --duration "${seconds}s" \
    --duplicate-share 0 --json "$out/$name.json" >"$out/$name.txt" 2>&1
  c1=$(cpu "$pid")
  python3 - "$out/$name.json" "$c0" "$c1" "$ticks" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
ok = j["statusCodeDistribution"].get("Ok", 0)
cpu = (float(sys.argv[3]) - float(sys.argv[2])) / float(sys.argv[4])
print(f"{cpu * 1e6 / max(ok, 1):.1f} {j['rps']:.0f}")
PY
}

rport=$(free_port)
redis-server --port "$rport" "${redis_flags[@]}" >"$out/redis.log" 2>&1 &
pids+=($!)
sleep 0.5
printf '%-6s %-22s %-22s %s\n' round "echo µs/call (calls/s)" "API µs/report (calls/s)" ratio | tee "$out/rounds.txt"
for round in $(seq 1 "$rounds"); do
  rm -f "$out/echo-addr.txt"
  "$lt" --serve-echo >"$out/echo-addr.txt" 2>"$out/echo.log" &
  echo_pid=$!
  pids+=($echo_pid)
  for _ in $(seq 1 50); do [ -s "$out/echo-addr.txt" ] && break; sleep 0.1; done
  read -r e_us e_rps < <(drive "$echo_pid" "$(head -1 "$out/echo-addr.txt")" "echo-$round")
  kill "$echo_pid"; wait "$echo_pid" 2>/dev/null || true

  redis-cli -p "$rport" flushall >/dev/null
  grpc=$(free_port)
  env ${API_COST_ENV:-} "$target/gridroute" serve "${serve_auth[@]}" "${unlimited[@]}" --redis-url "redis://127.0.0.1:$rport/" \
    --role api --grpc-addr "127.0.0.1:$grpc" --http-addr off --metrics-addr off ${SERVE_ARGS:-} >"$out/api.log" 2>&1 &
  api=$!
  pids+=($api)
  wait_health "$target/gridroute" "$grpc"
  if [ "${PERF:-0}" = 1 ] && [ "$round" = "$rounds" ]; then
    perf record -q --call-graph "${PERF_CALL_GRAPH:-dwarf,16384}" -F 499 -o "$out/perf.data" -p "$api" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  read -r a_us a_rps < <(drive "$api" "http://127.0.0.1:$grpc" "api-$round")
  if [ -n "${perf_pid:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; fi
  kill "$api"; wait "$api" 2>/dev/null || true
  ratio=$(python3 -c "print(f'{$a_us / $e_us:.2f}')")
  printf '%-6s %-22s %-22s %s×\n' "$round" "$e_us ($e_rps)" "$a_us ($a_rps)" "$ratio" | tee -a "$out/rounds.txt"
  echo "$e_us $e_rps $a_us $a_rps" >"$out/last.txt"
done
if [ -n "${perf_pid:-}" ]; then
  perf report -i "$out/perf.data" --no-children --percent-limit 1.5 --stdio 2>/dev/null \
    | grep -v '^$' >"$out/perf.txt" || true
  perf report -i "$out/perf.data" --children --sort symbol --percent-limit 2 --stdio -g none 2>/dev/null \
    | grep -v '^$' >"$out/perf-children.txt" || true
  head -60 "$out/perf-children.txt"
fi
echo "results in $out"
