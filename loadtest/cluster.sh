#!/usr/bin/env bash
# Issue 13's Redis Cluster figures, one Redis and a local three-primary cluster side by side in
# one run (about 4 minutes): the same release binary (API and router in one process,
# CLUSTER_PARTITIONS partitions, default 12) on each store, then
#   1. capacity: closed-loop unary reports for 10 s;
#   2. end to end, open loop, at CLUSTER_RATE reports/s (default 1,000) and at half of the
#      capacity measured on that store: report → subscriber p50/p99/p99.9 and lost;
#   3. Redis CPU per incident, summed over the primaries: over 14 s in the middle of the
#      fixed-rate run, where the host has cores to spare (with the cores each process used and
#      how long the redis-servers waited for a core), and over the half-capacity run, where the
#      primaries, the service and the load tester preempt each other; and how the incidents
#      and that CPU spread over the primaries.
# The cluster's slots are laid out so that each primary holds the same number of partitions
# (`gridroute cluster-slots`, docs/OPERATIONS.md). Figures only; nothing fails on timing.
# `make cluster-costs` runs it; results in target/cluster-costs/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/cluster-costs"
mkdir -p "$out"
[ "${NO_BUILD:-0}" = 1 ] || cargo build -q --release -p gridroute -p gridroute-loadtest
lt="$target/gridroute-loadtest"
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
parts=${CLUSTER_PARTITIONS:-12}
rate=${CLUSTER_RATE:-1000}
pids=()
# A free port for a cluster node: Redis also listens on port + 10000 (the cluster bus), so
# both must be free and the port at most 55535.
cluster_port() {
  python3 -c '
import random, socket
while True:
    p = random.randint(20000, 55000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass'
}
# Waits until the redis-server on port $1 answers.
wait_redis() {
  for _ in $(seq 1 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server on port $1 did not start (log: $out/redis-$1.log)" >&2
  return 1
}
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
# CPU seconds and run-queue wait (ns) so far, summed over the redis-servers on ports $1.
redis_totals() {
  local port c=0 w=0
  for port in $1; do
    c=$(python3 -c "print($c + $(redis_cpu "$port"))")
    w=$((w + $(waited "$(redis-cli -p "$port" info server | tr -d '\r' | awk -F: '/^process_id:/{print $2}')")))
  done
  echo "$c $w"
}

# Runs the service on $1 (a Redis URL), measures it, and leaves the figures in $out/$2-*.
measure() {
  local url=$1 name=$2 ports=$3 half port
  # The nodes' ports differ from run to run: an earlier run's files would be summed in.
  rm -f "$out/$name-commandstats-"*
  serve_gridroute "$url" "$out/$name-serve.log" --partitions "$parts"
  capacity "$out/$name-capacity"
  sleep 5
  # The fixed rate leaves the host cores to spare: Redis CPU per incident over 14 s of its
  # middle is the cluster's own cost, less the preemption of a saturated host.
  "$lt" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate "$rate" --duration 20s --drain 30s \
    --duplicate-share 0 --json "$out/$name-fixed.json" >"$out/$name-fixed.txt" 2>&1 &
  local lpid=$! window=14 g0 g1 l0 l1 c0 c1 w0 w1
  sleep 3
  read -r g0 l0 c0 w0 <<<"$(cpu "${pids[-1]}") $(cpu "$lpid") $(redis_totals "$ports")"
  sleep "$window"
  read -r g1 l1 c1 w1 <<<"$(cpu "${pids[-1]}") $(cpu "$lpid") $(redis_totals "$ports")"
  echo "$c0 $c1 $window $rate $((g1 - g0)) $((l1 - l0)) $ticks $w0 $w1" >"$out/$name-fixed-cpu"
  wait "$lpid" || true
  sleep 2
  half=$(python3 -c "import json; print(max(100, int(json.load(open('$out/$name-capacity.json'))['rps'] / 2)))")
  echo "$half" >"$out/$name-rate"
  : >"$out/$name-cpu0"
  for port in $ports; do echo "$port $(redis_cpu "$port")" >>"$out/$name-cpu0"; done
  for port in $ports; do redis-cli -p "$port" config resetstat >/dev/null; done
  local g0; g0=$(cpu "${pids[-1]}")
  "$lt" --addr "http://127.0.0.1:$grpc" --scenario e2e --rate "$half" --duration 20s --drain 30s \
    --duplicate-share 0 --json "$out/$name-half.json" --html "$out/$name-half.html" >"$out/$name-half.txt" 2>&1 || true
  sleep 2
  : >"$out/$name-cpu1"
  for port in $ports; do
    echo "$port $(redis_cpu "$port") $(redis-cli -p "$port" info keyspace | awk -F'[=,]' '/^db0/{print $2+0}')" >>"$out/$name-cpu1"
    redis-cli -p "$port" info commandstats | tr -d '\r' >"$out/$name-commandstats-$port"
  done
  echo "$(( $(cpu "${pids[-1]}") - g0 )) $ticks $(awk '/^VmHWM/{print $2}' "/proc/${pids[-1]}/status")" >"$out/$name-gridroute"
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
}

echo "== one Redis, $parts partitions"
single=$(free_port)
redis-server --port "$single" "${redis_flags[@]}" >"$out/redis-$single.log" 2>&1 &
pids+=($!)
wait_redis "$single"
measure "redis://127.0.0.1:$single/" single "$single"

echo "== a three-primary Redis Cluster, $parts partitions, each primary holding a third of them"
nodes=()
for _ in 1 2 3; do
  port=$(cluster_port)
  dir=$(mktemp -d)
  redis-server --port "$port" --dir "$dir" "${redis_flags[@]}" --cluster-enabled yes \
    --cluster-config-file "nodes-$port.conf" >"$out/redis-$port.log" 2>&1 &
  pids+=($!)
  nodes+=("$port")
done
for port in "${nodes[@]}"; do wait_redis "$port"; done
mapfile -t ranges < <("$target/gridroute" cluster-slots --partitions "$parts" --primaries 3)
for i in 0 1 2; do
  # shellcheck disable=SC2086
  redis-cli -p "${nodes[$i]}" cluster addslotsrange ${ranges[$i]} >/dev/null
  redis-cli -p "${nodes[$i]}" cluster meet 127.0.0.1 "${nodes[0]}" >/dev/null
done
for port in "${nodes[@]}"; do
  for _ in $(seq 1 200); do
    redis-cli -p "$port" cluster info | grep -q cluster_state:ok && break
    sleep 0.1
  done
done
measure "redis+cluster://127.0.0.1:${nodes[0]},127.0.0.1:${nodes[1]},127.0.0.1:${nodes[2]}/" cluster "${nodes[*]}"

echo "== issue 13 on Redis Cluster: figures beside one Redis, and the targets"
python3 - "$out" "$parts" <<'PY'
import json, sys
out, parts = sys.argv[1], int(sys.argv[2])
def e2e(name, run):
    e = json.load(open(f"{out}/{name}-{run}.json"))["endToEnd"]
    q = lambda pct: next(x["latency"] for x in e["latencyDistribution"] if x["percentage"] == pct) / 1e6
    return e, f"p50 {q(50.0):.1f} ms, p99 {q(99.0):.1f} ms, p99.9 {q(99.9):.1f} ms, lost {e['lost']}"
def cpu(name):
    before = {l.split()[0]: float(l.split()[1]) for l in open(f"{out}/{name}-cpu0")}
    after = [l.split() for l in open(f"{out}/{name}-cpu1")]
    return [(p, float(c) - before[p], int(k)) for p, c, k in after]
per, at_rate = {}, {}
for name in ("single", "cluster"):
    cap = json.load(open(f"{out}/{name}-capacity.json"))["rps"]
    _, fixed = e2e(name, "fixed")
    c0, c1, window, frate, g, l, hz, w0, w1 = map(float, open(f"{out}/{name}-fixed-cpu").read().split())
    at_rate[name] = (c1 - c0) * 1e6 / (frate * window)
    fixed += (f"; Redis CPU per incident {at_rate[name]:.1f} µs (summed over the primaries); "
              f"cores used by Redis {(c1 - c0) / window:.2f}, gridroute {g / hz / window:.2f}, "
              f"the load tester {l / hz / window:.2f}; Redis waited {(w1 - w0) / 1e9 / window:.3f} s/s for a core")
    half, halfs = e2e(name, "half")
    nodes = cpu(name)
    n = max(half["received"], 1)
    per[name] = sum(c for _, c, _ in nodes) * 1e6 / n
    gticks, hz, hwm = open(f"{out}/{name}-gridroute").read().split()
    gcpu = int(gticks) / int(hz) * 1e6 / n
    print(f"  {name}: capacity {cap:,.0f} reports/s; fixed rate: {fixed}")
    rate = int(open(f"{out}/{name}-rate").read())
    print(f"  {name}: at half capacity ({rate:,}/s): {halfs}; "
          f"Redis CPU per incident {per[name]:.1f} µs (summed over {len(nodes)} primaries); "
          f"gridroute (API and router, one process) {gcpu:.1f} µs per incident, peak RSS {int(hwm) / 1024:.0f} MiB")
    if len(nodes) > 1:
        keys = [k for _, _, k in nodes]
        cpus = [c for _, c, _ in nodes]
        spread = lambda xs: (max(xs) - min(xs)) / (sum(xs) / len(xs)) * 100
        print(f"  {name}: keys per primary {keys} (spread {spread(keys):.0f} % of the mean), "
              f"Redis CPU per primary {[round(c, 2) for c in cpus]} s (spread {spread(cpus):.0f} %)")
# Where the difference goes: calls and CPU per incident of each command, summed over primaries.
import glob, re
def stats(name):
    calls, usec = {}, {}
    for f in glob.glob(f"{out}/{name}-commandstats-*"):
        for l in open(f):
            m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", l)
            if m:
                calls[m[1]] = calls.get(m[1], 0) + int(m[2])
                usec[m[1]] = usec.get(m[1], 0) + int(m[3])
    n = max(json.load(open(f"{out}/{name}-half.json"))["endToEnd"]["received"], 1)
    return {c: (calls[c] / n, usec[c] / n) for c in calls}
s, c = stats("single"), stats("cluster")
print("  per incident over the half-capacity run (commandstats, summed over primaries):")
print(f"    {'command':<20} {'calls one':>9} {'calls cl.':>9} {'µs one':>8} {'µs cl.':>8}")
for cmd in sorted(set(s) | set(c), key=lambda k: -max(s.get(k, (0, 0))[1], c.get(k, (0, 0))[1]))[:12]:
    a, b = s.get(cmd, (0, 0)), c.get(cmd, (0, 0))
    print(f"    {cmd:<20} {a[0]:>9.3f} {b[0]:>9.3f} {a[1]:>8.1f} {b[1]:>8.1f}")
print(f"    {'all commands':<20} {sum(v[0] for v in s.values()):>9.3f} {sum(v[0] for v in c.values()):>9.3f} "
      f"{sum(v[1] for v in s.values()):>8.1f} {sum(v[1] for v in c.values()):>8.1f}")
print(f"  cluster ÷ one Redis, Redis CPU per incident: {at_rate['cluster'] / at_rate['single']:.2f} at the fixed rate, "
      f"{per['cluster'] / per['single']:.2f} at half capacity (target ≤ 1.10)")
PY
echo "results in $out"
