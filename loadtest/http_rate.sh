#!/usr/bin/env bash
# The HTTP/JSON report rate beside the gRPC one, in one run: an API process alone (no router:
# the reports queue) with both faces answers unary reports from the load tester, over gRPC and
# over HTTP/JSON (`POST /v1/incidents`, h2c), alternating for a few rounds. Prints calls/s and
# the API process's CPU per accepted call (utime+stime from /proc) of each, and the medians.
# Figures only; nothing fails on timing. `make http-rate` runs it; results in target/http-rate/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/http-rate"
mkdir -p "$out"
cargo build -q --release -p gridroute -p gridroute-loadtest
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
seconds=${HTTP_RATE_SECONDS:-8}
rounds=${HTTP_RATE_ROUNDS:-3}
rport=$(free_port)
redis-server --port "$rport" "${redis_flags[@]}" >"$out/redis.log" 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; wait 2>/dev/null || true' EXIT

# $1: protocol (grpc or http).
run() {
  local protocol=$1
  local grpc http; grpc=$(free_port); http=$(free_port)
  "$target/gridroute" serve "${serve_auth[@]}" "${unlimited[@]}" --redis-url "redis://127.0.0.1:$rport/" \
    --role api --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" --metrics-addr off \
    >"$out/api-$protocol.log" 2>&1 &
  local api=$!
  wait_health "$target/gridroute" "$grpc"
  local c0; c0=$(cpu "$api")
  "$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --http-addr "http://127.0.0.1:$http" \
    --protocol "$protocol" --scenario report --concurrency 64 --duration "${seconds}s" \
    --duplicate-share 0 --json "$out/$protocol.json" >"$out/$protocol.txt" 2>&1
  local c1; c1=$(cpu "$api")
  kill "$api"; wait "$api" 2>/dev/null || true
  redis-cli -p "$rport" flushall >/dev/null
  python3 - "$out/$protocol.json" "$protocol" "$c0" "$c1" "$ticks" <<'PY'
import json, sys
path, label, c0, c1, ticks = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
r = json.load(open(path))
ok = r["statusCodeDistribution"].get("Ok", 0)
cpu_us = (c1 - c0) / ticks * 1e6 / max(ok, 1)
print(f"{label:5} {r['rps']:9.0f} calls/s  {cpu_us:6.1f} µs API CPU per call  ({ok} ok, {r['errorRate']*100:.2f} % errors)")
with open(path + ".res", "w") as f:
    f.write(f"{r['rps']} {cpu_us}\n")
PY
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  for p in grpc http; do
    run "$p"
    cp "$out/$p.json.res" "$out/$p-$round.res"
  done
done
python3 - "$out" "$rounds" <<'PY'
import pathlib, statistics, sys
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def med(p, i):
    return statistics.median(float((out / f"{p}-{r}.res").read_text().split()[i]) for r in range(1, rounds + 1))
g, h = med("grpc", 0), med("http", 0)
gc, hc = med("grpc", 1), med("http", 1)
print(f"median: gRPC {g:.0f} calls/s ({gc:.1f} µs API CPU per call), HTTP/JSON {h:.0f} calls/s "
      f"({hc:.1f} µs): HTTP/JSON reaches {h / g * 100:.0f} % of the gRPC rate, {hc / gc:.2f}x its CPU per call")
PY
