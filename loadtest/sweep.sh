#!/usr/bin/env bash
# Latency and CPU by rate (issue 13: latency at half of capacity): one gridroute (API and
# router) on a private redis-server, the load tester's e2e scenario open loop at each of
# SWEEP_RATES reports/s for SWEEP_SECONDS, and each process's CPU (redis-server, gridroute, the
# load tester, the three together) over the middle of each run, in cores, and how long each
# process's threads waited for a core (run-queue wait from /proc/PID/task/*/schedstat, in
# seconds per second: 0.5 means half a thread was runnable but not running, on average). Shows
# where the box saturates, how CPU per incident falls as batches grow, and how much of the
# latency is waiting for a core. `make sweep` runs it; results in target/sweep/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/sweep"
mkdir -p "$out"
[ "${NO_BUILD:-0}" = 1 ] || cargo build -q --release -p gridroute -p gridroute-loadtest
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
start_redis "$out/redis.log"
serve_gridroute "redis://127.0.0.1:$rport/" "$out/serve.log"
gpid=${pids[-1]}
secs=${SWEEP_SECONDS:-8}
cores() { python3 -c "print(f'{($2 - $1) / $ticks / $3:.2f}')"; }
# Seconds waited per second of window $1, for each pair (before, after) that follows.
waits() {
  python3 -c "import sys; w = float(sys.argv[1]); v = [float(x) for x in sys.argv[2:]]
print(' · '.join(f'{(b - a) / 1e9 / w:.2f}' for a, b in zip(v[::2], v[1::2])))" "$@"
}
printf '%-8s %-34s %-7s %-9s %-10s %-8s %s\n' rate "report → subscriber p50 · p99 · p99.9" redis gridroute loadtester all \
  "run-queue wait (s/s) redis · gridroute · loadtester"
for rate in ${SWEEP_RATES:-1000 2000 3000 4000 5000}; do
  "$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate "$rate" \
    --duration "${secs}s" --drain 10s --duplicate-share 0 --json "$out/e2e-$rate.json" >"$out/e2e-$rate.txt" 2>&1 &
  lpid=$!
  window=$((secs - 3))
  sleep 2
  r0=$(cpu "$rpid") g0=$(cpu "$gpid") l0=$(cpu "$lpid")
  w0=("$(waited "$rpid")" "$(waited "$gpid")" "$(waited "$lpid")")
  sleep "$window"
  r1=$(cpu "$rpid") g1=$(cpu "$gpid") l1=$(cpu "$lpid")
  w1=("$(waited "$rpid")" "$(waited "$gpid")" "$(waited "$lpid")")
  wait "$lpid" || true
  lat=$(python3 - "$out/e2e-$rate.json" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["endToEnd"]
q = {x["percentage"]: x["latency"] / 1e6 for x in e["latencyDistribution"]}
print(f"{q[50.0]:.1f} · {q[99.0]:.1f} · {q[99.9]:.1f} ms, lost {e['lost']}")
PY
)
  printf '%-8s %-34s %-7s %-9s %-10s %-8s %s\n' "$rate" "$lat" "$(cores "$r0" "$r1" "$window")" \
    "$(cores "$g0" "$g1" "$window")" "$(cores "$l0" "$l1" "$window")" "$(cores $((r0 + g0 + l0)) $((r1 + g1 + l1)) "$window")" \
    "$(waits "$window" "${w0[0]}" "${w1[0]}" "${w0[1]}" "${w1[1]}" "${w0[2]}" "${w1[2]}")"
done | tee "$out/sweep.txt"
