#!/usr/bin/env bash
# Router CPU per routed incident (issue 13's figure), in one run: an API process alone queues
# ROUTER_COST_REPORTS reports (report-batch, no router running), then one `--role router`
# process drains them; its CPU time (utime + stime from /proc) over the incidents routed, for
# ROUTER_COST_ROUNDS rounds on the same Redis (flushed between rounds). With PERF=1 the router
# is sampled by `perf record -g` while it drains and the top of `perf report` is printed; with
# ROUTER_METRICS=1 the router records metrics as a deployed one does; with INSTRUCTIONS=1 it
# runs under valgrind's cachegrind and each round also prints instructions per incident.
# ROUTER_ARGS adds flags to the router process (ROUTER_ARGS=--transactions: first dispatches
# written by transaction instead of the dispatch script).
# Figures only; nothing fails on timing. `make router-cost` runs it; results in
# target/router-cost/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/router-cost"
mkdir -p "$out"
[ "${NO_BUILD:-0}" = 1 ] || cargo build -q --release -p gridroute -p gridroute-loadtest
# shellcheck source=loadtest/lib.sh
source loadtest/lib.sh
dev_auth "$target/gridroute"
if [ "${INSTRUCTIONS:-0}" = 1 ] && ! command -v valgrind >/dev/null; then
  echo "INSTRUCTIONS=1 needs valgrind: sudo apt-get install -y valgrind" >&2
  exit 1
fi
reports=${ROUTER_COST_REPORTS:-100000}
rounds=${ROUTER_COST_ROUNDS:-3}
rport=$(free_port)
redis-server --port "$rport" "${redis_flags[@]}" >"$out/redis.log" 2>&1 &
rpid=$!
pids=($rpid)
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
# Entries in the ingest streams not yet routed: the routers' group's lag plus pending, or every
# entry while no group exists yet. Routed entries are acknowledged and trimmed later in whole
# stream nodes, so the streams' length does not fall to zero.
queued() {
  local n=0
  for key in $(redis-cli -p "$rport" --scan --pattern '*:ingest'); do
    n=$((n + $(redis-cli -p "$rport" xinfo groups "$key" | awk -v len="$(redis-cli -p "$rport" xlen "$key")" '
      prev == "name" && $0 == "routers" { group = 1 }
      group && prev == "pending" { pending = $0 }
      group && prev == "lag" { lag = ($0 == "" ? len : $0); group = 0 }
      { prev = $0 }
      END { print (pending == "" && lag == "") ? len : pending + lag }')))
  done
  echo "$n"
}

for round in $(seq 1 "$rounds"); do
  grpc=$(free_port)
  "$target/gridroute" serve "${serve_auth[@]}" "${unlimited[@]}" --redis-url "redis://127.0.0.1:$rport/" \
    --role api --grpc-addr "127.0.0.1:$grpc" --http-addr off --metrics-addr off >"$out/api.log" 2>&1 &
  api=$!
  pids+=($api)
  wait_health "$target/gridroute" "$grpc"
  "$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario report-batch --batch-size 100 \
    --concurrency 4 --requests "$reports" --duplicate-share 0 >"$out/queue.txt" 2>&1
  kill "$api"; wait "$api" 2>/dev/null || true
  before=$(queued)
  # ROUTER_METRICS=1: the router records its metrics as a deployed one does (a Prometheus
  # endpoint on a free port, not scraped); by default it runs without a recorder.
  metrics=off
  [ "${ROUTER_METRICS:-0}" = 1 ] && metrics="127.0.0.1:$(free_port)"
  # INSTRUCTIONS=1: the router runs under cachegrind (no cache simulation), which counts the
  # instructions it executes: a figure that, unlike CPU time on a shared host, repeats within
  # a fraction of a percent, for comparing two builds (it includes the router's start-up).
  # INSTRUCTIONS_TOOL=callgrind records the call graph too (callgrind_annotate --inclusive=yes).
  wrap=()
  tool=${INSTRUCTIONS_TOOL:-cachegrind}
  if [ "${INSTRUCTIONS:-0}" = 1 ]; then
    wrap=(valgrind -q --tool="$tool" "--$tool-out-file=$out/$tool.out")
    [ "$tool" = cachegrind ] && wrap+=(--cache-sim=no)
  fi
  "${wrap[@]}" "$target/gridroute" serve "${serve_auth[@]}" --redis-url "redis://127.0.0.1:$rport/" --role router \
    --metrics-addr "$metrics" ${ROUTER_ARGS:-} >"$out/router.log" 2>&1 &
  router=$!
  pids+=($router)
  if [ "${PERF:-0}" = 1 ]; then
    perf record -q --call-graph "${PERF_CALL_GRAPH:-dwarf,16384}" -F "${PERF_FREQ:-499}" -o "$out/perf.data" -p "$router" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  start=$(date +%s.%N)
  while [ "$(queued)" -gt 0 ]; do sleep 0.2; done
  end=$(date +%s.%N)
  c=$(cpu "$router")
  # Peak resident memory of the router over the round (its caches included), in MiB.
  rss=$(awk '/^VmHWM:/{printf "%.0f", $2 / 1024}' "/proc/$router/status")
  if [ "${PERF:-0}" = 1 ]; then
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  fi
  kill "$router"; wait "$router" 2>/dev/null || true
  instructions=0
  if [ "${INSTRUCTIONS:-0}" = 1 ]; then
    instructions=$(awk '/^(summary|totals):/{print $2; exit}' "$out/$tool.out")
  fi
  python3 -c "
before, c, ticks, start, end = $before, $c, $ticks, $start, $end
line = f'round $round: {before} incidents routed in {end - start:.1f} s ({before / (end - start):,.0f}/s); router CPU {c / ticks:.2f} s = {c / ticks * 1e6 / before:.1f} µs per incident; peak RSS $rss MiB'
if $instructions:
    line += f'; {$instructions / before:,.0f} instructions per incident'
print(line)
" | tee "$out/round-$round.txt"
  redis-cli -p "$rport" flushall >/dev/null
done
if [ "${PERF:-0}" = 1 ]; then
  perf report -i "$out/perf.data" --stdio --no-children --percent-limit 1.5 --sort symbol 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -60 >"$out/perf.txt"
  head -60 "$out/perf.txt"
fi
