#!/usr/bin/env bash
# What authentication costs the unary path, in one run: an API process alone (no router: the
# reports queue) answers unary ReportIncident calls from the load tester, once with bearer
# tokens (each verified once, then found by its SHA-256) and once with --insecure-no-auth (the
# principal taken from a header, no verification), alternating for three rounds. Prints calls/s
# and the API process's CPU per accepted call (utime+stime from /proc), and the ratio. Figures
# only; nothing fails on timing. `make auth-cost` runs it; results in target/auth-cost/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/auth-cost"
mkdir -p "$out"
cargo build -q --release -p gridroute -p gridroute-loadtest
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
seconds=${AUTH_COST_SECONDS:-8}
rounds=${AUTH_COST_ROUNDS:-5}
rport=$(free_port)
redis-server --port "$rport" "${redis_flags[@]}" >"$out/redis.log" 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; wait 2>/dev/null || true' EXIT

# $1: label; then the serve flags of this mode. The load tester's credentials follow the mode.
run() {
  local label=$1; shift
  local grpc; grpc=$(free_port)
  "$target/gridroute" serve "$@" "${unlimited[@]}" --redis-url "redis://127.0.0.1:$rport/" --role api \
    --grpc-addr "127.0.0.1:$grpc" --http-addr off --metrics-addr off >"$out/api-$label.log" 2>&1 &
  local api=$!
  wait_health "$target/gridroute" "$grpc"
  local creds=(--tokens "$GRIDROUTE_TOKENS")
  if [ "$label" = insecure ]; then
    creds=(--metadata "x-gridroute-principal=source_system:gridroute-loadtest")
  fi
  local c0; c0=$(cpu "$api")
  env -u GRIDROUTE_TOKENS "$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" "${creds[@]}" \
    --scenario report --concurrency 64 --duration "${seconds}s" --duplicate-share 0 \
    --json "$out/$label.json" >"$out/$label.txt" 2>&1
  local c1; c1=$(cpu "$api")
  kill "$api"; wait "$api" 2>/dev/null || true
  redis-cli -p "$rport" flushall >/dev/null
  python3 - "$out/$label.json" "$label" "$c0" "$c1" "$ticks" <<'PY'
import json, sys
path, label, c0, c1, ticks = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
r = json.load(open(path))
ok = r["statusCodeDistribution"].get("Ok", 0)
cpu_us = (c1 - c0) / ticks * 1e6 / max(ok, 1)
print(f"{label:9} {r['rps']:9.0f} calls/s  {cpu_us:6.1f} µs API CPU per call  ({ok} ok, {r['errorRate']*100:.2f} % errors)")
with open(path + ".cpu", "w") as f:
    f.write(f"{cpu_us}\n")
PY
}

for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  run tokens "${serve_auth[@]}"
  cp "$out/tokens.json.cpu" "$out/tokens-$round.cpu"
  run insecure --insecure-no-auth
  cp "$out/insecure.json.cpu" "$out/insecure-$round.cpu"
done
python3 - "$out" "$rounds" <<'PY'
import pathlib, statistics, sys
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
t = [float((out / f"tokens-{i}.cpu").read_text()) for i in range(1, rounds + 1)]
n = [float((out / f"insecure-{i}.cpu").read_text()) for i in range(1, rounds + 1)]
mt, mn = statistics.median(t), statistics.median(n)
print(f"median API CPU per call: with tokens {mt:.1f} µs, without authentication {mn:.1f} µs: "
      f"authentication costs {mt - mn:+.1f} µs per call ({(mt / mn - 1) * 100:+.1f} %)")
PY
