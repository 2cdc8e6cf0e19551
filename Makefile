# lottery: build, run and test the bet collection system.
# `make help` lists the targets. Every target works from a clean clone.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CLIENTS ?= 5
DATA_DIR ?= data
SERVER_ADDRESS ?= 127.0.0.1:12345
RUN_DIR ?= runs
STAMP := $(shell date +%Y%m%d-%H%M%S)
BETS_FILE ?= $(RUN_DIR)/bets-$(STAMP).csv
BIN := target/release

.PHONY: help build run-server run-clients run test bench data clean-runs

help:
	@echo "make build        build the server and client (release)"
	@echo "make run          the whole draw: server + $(CLIENTS) agencies on DATA_DIR=$(DATA_DIR), then stop"
	@echo "make run-server   the server in the foreground (bets go to a new file under $(RUN_DIR)/)"
	@echo "make run-clients  $(CLIENTS) agencies in parallel against SERVER_ADDRESS=$(SERVER_ADDRESS)"
	@echo "make test         unit and integration tests"
	@echo "make bench        the benchmark (see README, Performance)"
	@echo "make data         regenerate the committed default data in data/"

build:
	cargo build --release --bins

run-server: build
	@mkdir -p $(RUN_DIR)
	@echo "bets file: $(BETS_FILE)"
	SERVER_BETS_FILE=$(BETS_FILE) SERVER_AGENCIES=$${SERVER_AGENCIES:-$(CLIENTS)} $(BIN)/server

# Each client's lines are prefixed "clientN | "; fails if any client fails.
run-clients: build
	@pids=(); \
	for i in $$(seq 1 $(CLIENTS)); do \
	  ( CLI_ID=$$i CLI_DATA_FILE=$(DATA_DIR)/agency-$$i.csv CLI_SERVER_ADDRESS=$(SERVER_ADDRESS) \
	      $(BIN)/client 2>&1 | sed -u "s/^/client$$i | /" ) & pids+=($$!); \
	done; \
	failed=0; for p in "$${pids[@]}"; do wait $$p || failed=1; done; \
	if [ $$failed -ne 0 ]; then echo "run-clients: at least one client failed (see its lines above)"; fi; \
	exit $$failed

# The main job in one command: a server on a free port and a new bets file, the
# agencies, a SIGTERM to the server, and each agency's winner count.
run: build
	@mkdir -p $(RUN_DIR); \
	log=$(RUN_DIR)/server-$(STAMP).log; \
	SERVER_PORT=0 SERVER_BETS_FILE=$(BETS_FILE) SERVER_AGENCIES=$(CLIENTS) $(BIN)/server 2> >(tee $$log | sed -u "s/^/server  | /" >&2) & \
	server=$$!; \
	for _ in $$(seq 100); do grep -q "action: config" $$log 2>/dev/null && break; sleep 0.05; done; \
	port=$$(grep -o "server_port: [0-9]*" $$log | grep -o "[0-9]*$$" || true); \
	if [ -z "$$port" ]; then echo "run: the server did not start (see above)"; wait $$server || true; exit 1; fi; \
	failed=0; \
	$(MAKE) --no-print-directory run-clients SERVER_ADDRESS=127.0.0.1:$$port CLIENTS=$(CLIENTS) DATA_DIR=$(DATA_DIR) \
	  | tee $(RUN_DIR)/clients-$(STAMP).log || failed=1; \
	kill -TERM $$server; wait $$server || { echo "run: the server exited with an error"; failed=1; }; \
	echo; echo "== draw: $$(grep -c 'action: sorteo | result: success' $$log) (bets file $(BETS_FILE), $$(wc -l < $(BETS_FILE)) bets)"; \
	for i in $$(seq 1 $(CLIENTS)); do \
	  n=$$(grep "^client$$i |.*action: consulta_ganadores | result: success" $(RUN_DIR)/clients-$(STAMP).log | grep -o "cant_ganadores: [0-9]*" | grep -o "[0-9]*$$" || true); \
	  echo "agency $$i: $${n:-NO ANSWER} winners"; [ -n "$$n" ] || failed=1; \
	done; \
	exit $$failed

test:
	cargo test --all-targets

bench:
	cargo build --release --bins --examples
	$(BIN)/examples/bench

data:
	cargo run --release --example gen_bets -- --agencies 5 --bets 10000 --out data
