# Helpers shared by the load-test scripts (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until the gridroute on 127.0.0.1:$2 answers health checks ($1: the gridroute binary).
wait_health() {
  for _ in $(seq 1 300); do
    if "$1" health --addr "http://127.0.0.1:$2" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "gridroute on port $2 did not become healthy within 30 s" >&2
  return 1
}

# A throwaway redis-server's settings, as `gridroute dev` starts its own (docs/OPERATIONS.md "Redis").
redis_flags=(--save '' --appendonly no --hash-max-listpack-value 4096)

# Starts a throwaway redis-server on a free port, logging to $1; sets rport and rpid, appends
# its pid to pids and gives it half a second to listen.
start_redis() {
  rport=$(free_port)
  redis-server --port "$rport" "${redis_flags[@]}" >"$1" 2>&1 &
  rpid=$!
  pids+=("$rpid")
  sleep 0.5
}

# Development credentials for every gridroute a script starts ($1: the gridroute binary): `dev`
# and `serve "${serve_auth[@]}"` trust the same development key (in GRIDROUTE_DEV_DIR), and the
# load tester takes each role's token from GRIDROUTE_TOKENS (reports as its reporting system,
# subscriptions as each department).
dev_auth() {
  export GRIDROUTE_DEV_DIR="${GRIDROUTE_DEV_DIR:-$(mktemp -d)}"
  GRIDROUTE_TOKENS=$("$1" dev-token --all)
  export GRIDROUTE_TOKENS
  serve_auth=(--jwks "$GRIDROUTE_DEV_DIR/dev-jwks.json" --token-issuer gridroute-dev)
}

# Per-principal rate limits far above what one machine serves, for runs that measure capacity
# (the defaults cap a reporting system at 20,000 calls/s per replica: docs/ACCESS.md).
unlimited=(--rate-limits "source_system=10000000:10000000,department=10000000:10000000,command_centre=10000000:10000000")

# Starts `gridroute serve` (API and router in one process) on the Redis URL $1 with the
# development credentials (dev_auth first) and no rate limits, logging to $2, with any further
# arguments; sets grpc to its port, appends its pid to pids and waits until it is healthy.
# Needs target (the release directory). METRICS=host:port serves its /metrics there (default off);
# SERVE_ARGS adds flags to every run (e.g. SERVE_ARGS=--inline-routing make costs).
serve_gridroute() {
  local url=$1 log=$2
  shift 2
  grpc=$(free_port)
  # SERVE_ARGS: extra flags for every script-started gridroute (e.g. --inline-routing).
  # shellcheck disable=SC2086 # split on spaces on purpose
  "$target/gridroute" serve "${serve_auth[@]}" "${unlimited[@]}" --redis-url "$url" \
    --grpc-addr "127.0.0.1:$grpc" --http-addr off --metrics-addr "${METRICS:-off}" ${SERVE_ARGS:-} "$@" >"$log" 2>&1 &
  pids+=($!)
  wait_health "$target/gridroute" "$grpc"
}

# Capacity of the gridroute on port grpc: closed-loop unary reports, 64 in flight, for 10 s;
# the load tester's figures in $1.json and its output in $1.txt.
capacity() {
  "$target/gridroute-loadtest" --addr "http://127.0.0.1:$grpc" --scenario report --concurrency 64 \
    --duration 10s --duplicate-share 0 --json "$1.json" >"$1.txt" 2>&1
}

# CPU ticks (utime + stime) process $1 has used so far; divide by $ticks for seconds.
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# CPU seconds (user + sys) the redis-server on port $1 has used so far.
redis_cpu() { redis-cli -p "$1" info cpu | awk -F: '/used_cpu_(user|sys):/{s+=$2} END{print s}'; }

# Nanoseconds process $1's threads have waited on a run queue so far (threads that ended are
# not counted; none of these processes ends threads while under load).
waited() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {print s + 0}'; }
