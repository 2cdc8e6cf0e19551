# lottery: build, run and test the bet collection system.
# `make help` lists the targets and the variables. Every target works from a clean clone.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CLIENTS ?= 5
DATA_DIR ?= data
SERVER_PORT ?= 12345
SERVER_ADDRESS ?= 127.0.0.1:$(SERVER_PORT)
RUN_DIR ?= runs
STAMP := $(shell date +%Y%m%d-%H%M%S)
# A named bets file continues its round; unnamed, every run starts a new round
# in a new file whose name no other run has, even in the same second (mktemp).
BETS_FILE ?= $(SERVER_BETS_FILE)
BIN := target/release
# Every agency's token (lines `AGENCY TOKEN`, mode 0600), made when missing.
TOKENS ?= $(RUN_DIR)/tokens
AGENCIES = $(or $(SERVER_AGENCIES),$(CLIENTS))
# TLS=1: the programs speak TLS with the certificates `make certs` writes.
TLS ?=
TLS_DIR ?= $(RUN_DIR)/tls
SERVER_TLS_ENV = $(if $(TLS),SERVER_TLS_CERT=$(TLS_DIR)/server.pem SERVER_TLS_KEY=$(TLS_DIR)/server.key)
CLIENT_TLS_ENV = $(if $(TLS),CLI_TLS_CA=$(TLS_DIR)/ca.pem)

.PHONY: help build run-server run-clients run _run _clients verify test bench bench-instructions data clean tokens certs

help:
	@echo "make build        build the server and client (release)"
	@echo "make run          the whole round: a server, CLIENTS agencies on DATA_DIR, each agency's winners"
	@echo "make run-server   the server in the foreground; log in $(RUN_DIR)/server.log"
	@echo "make run-clients  CLIENTS agencies against SERVER_ADDRESS; log in $(RUN_DIR)/clients.log"
	@echo "make verify       audit the round of BETS_FILE for CLIENTS agencies (read-only)"
	@echo "make test         unit and integration tests"
	@echo "make bench        the benchmark (docs/benchmarks.md)"
	@echo "make bench-instructions  instructions per bet under callgrind, server and clients (needs valgrind)"
	@echo "make data         regenerate the committed default data in data/"
	@echo "make clean        remove $(RUN_DIR)/ (bets files, logs, tokens and certificates of earlier runs)"
	@echo "make tokens       make $(TOKENS): a random token for each of agencies 1..CLIENTS (done by the run targets)"
	@echo "make certs        make a CA and a localhost server certificate in $(TLS_DIR)/ (for TLS=1)"
	@echo
	@echo "variables (make VAR=value target):"
	@echo "  CLIENTS=$(CLIENTS)                agencies (and the server's SERVER_AGENCIES)"
	@echo "  DATA_DIR=$(DATA_DIR)             where agency-1.csv .. agency-CLIENTS.csv are"
	@echo "  SERVER_PORT=$(SERVER_PORT)         the port make run-server listens on"
	@echo "  SERVER_ADDRESS=$(SERVER_ADDRESS)  where make run-clients connects"
	@echo "  BETS_FILE=...             the round's bets file, to resume or verify it (default: a new $(RUN_DIR)/bets-<time>-<random>.csv)"
	@echo "  RUN_DIR=$(RUN_DIR)              where bets files and logs go"
	@echo "  TOKENS=$(TOKENS)        the tokens file the run targets use"
	@echo "  TLS=1                     run-server, run-clients and run speak TLS (certificates from make certs)"

build:
	cargo build --release --bins

# Stops with a message naming the first agency file that is missing.
define check_data
	for i in $$(seq 1 $(CLIENTS)); do \
	  if [ ! -f "$(DATA_DIR)/agency-$$i.csv" ]; then \
	    echo "$(1): $(DATA_DIR)/agency-$$i.csv does not exist: CLIENTS=$(CLIENTS) needs agency-1.csv to agency-$(CLIENTS).csv in DATA_DIR=$(DATA_DIR)" >&2; \
	    exit 2; \
	  fi; \
	done
endef

# Appends a random token for each agency 1..$(1) missing from $(TOKENS); the
# lock keeps run-server and run-clients, started together, from both adding one.
define ensure_tokens
	mkdir -p $(RUN_DIR); ( umask 077; touch $(TOKENS) ); \
	( flock 9; for i in $$(seq 1 $(1)); do \
	  grep -q "^$$i " $(TOKENS) || echo "$$i $$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >> $(TOKENS); \
	done ) 9>$(TOKENS).lock
endef

# Sets $$bets to the round's bets file: BETS_FILE if named, else a new file.
define new_round
	mkdir -p $(RUN_DIR); \
	if [ -n "$(BETS_FILE)" ]; then bets="$(BETS_FILE)"; \
	else bets=$$(mktemp --suffix=.csv "$(RUN_DIR)/bets-$(STAMP)-XXXXXX"); fi
endef

# Every line goes to the terminal and to a log file. The copy ignores Ctrl-C
# (SIGINT goes to the whole foreground group), so it still takes the lines the
# programs write while they stop, and ends when they have exited.
define log_to
	( trap '' INT; exec tee "$(1)" )
endef

run-server: build $(if $(TLS),certs)
	@$(call ensure_tokens,$(AGENCIES))
	@$(new_round); \
	log=$$(mktemp --suffix=.log "$(RUN_DIR)/server-$(STAMP)-XXXXXX"); ln -sfn "$${log##*/}" $(RUN_DIR)/server.log; \
	echo "bets file: $$bets (resume this round with BETS_FILE=$$bets)"; echo "log: $$log (also $(RUN_DIR)/server.log)"; \
	SERVER_PORT=$(SERVER_PORT) SERVER_BETS_FILE=$$bets SERVER_AGENCIES=$(AGENCIES) \
	  SERVER_TOKENS_FILE=$(TOKENS) $(SERVER_TLS_ENV) \
	  $(BIN)/server 2>&1 | $(call log_to,$$log)

# Fails if any client fails. Each client writes its own lines, prefixed
# "clientN | ", straight to the shared output: one write per line, so the
# lines keep the order of the events.
run-clients: build $(if $(TLS),certs)
	@$(call check_data,run-clients)
	@$(call ensure_tokens,$(CLIENTS))
	@mkdir -p $(RUN_DIR); log=$$(mktemp --suffix=.log "$(RUN_DIR)/clients-$(STAMP)-XXXXXX"); \
	ln -sfn "$${log##*/}" $(RUN_DIR)/clients.log; \
	echo "log: $$log (also $(RUN_DIR)/clients.log)"; \
	$(MAKE) --no-print-directory _clients 2>&1 | $(call log_to,$$log)

_clients:
	@pids=(); \
	for i in $$(seq 1 $(CLIENTS)); do \
	  LOG_PREFIX="client$$i | " CLI_ID=$$i CLI_DATA_FILE=$(DATA_DIR)/agency-$$i.csv CLI_SERVER_ADDRESS=$(SERVER_ADDRESS) \
	      CLI_TOKEN=$$(awk -v i=$$i '$$1 == i { print $$2; exit }' $(TOKENS)) $(CLIENT_TLS_ENV) \
	      $(BIN)/client 2>&1 & pids+=($$!); \
	done; \
	failed=0; for p in "$${pids[@]}"; do wait $$p || failed=1; done; \
	if [ $$failed -ne 0 ]; then echo "run-clients: at least one client failed (see its lines above)"; fi; \
	exit $$failed

# The main job in one command: a server on a free port and a new round, the
# agencies, a SIGTERM to the server, and each agency's winner count. Every
# program writes its prefixed lines into one stream (the run's log), so the
# merged view is in the order of the events: the draw before any winners.
run: build $(if $(TLS),certs)
	@$(call check_data,run)
	@$(call ensure_tokens,$(CLIENTS))
	@$(new_round); \
	merged=$$(mktemp --suffix=.log "$(RUN_DIR)/run-$(STAMP)-XXXXXX"); id=$${merged##*/run-}; id=$${id%.log}; \
	failed=0; \
	$(MAKE) --no-print-directory _run ROUND_FILE="$$bets" MERGED="$$merged" 2>&1 | tee "$$merged" || failed=1; \
	log=$(RUN_DIR)/server-$$id.log; clients=$(RUN_DIR)/clients-$$id.log; \
	sed -n 's/^server  | //p' "$$merged" > $$log; grep '^client' "$$merged" > $$clients || true; \
	ln -sfn server-$$id.log $(RUN_DIR)/server.log; ln -sfn clients-$$id.log $(RUN_DIR)/clients.log; \
	echo; echo "== draw: $$(grep -c 'action: sorteo | result: success' $$log) (bets file $$bets, $$(wc -l < "$$bets") bets; resume or audit it with BETS_FILE=$$bets)"; \
	echo "== logs: $$merged (all, in order), $$log and $$clients (the latest also as $(RUN_DIR)/server.log and $(RUN_DIR)/clients.log)"; \
	for i in $$(seq 1 $(CLIENTS)); do \
	  n=$$(grep "^client$$i |.*action: consulta_ganadores | result: success" $$clients | grep -o "cant_ganadores: [0-9]*" | grep -o "[0-9]*$$" || true); \
	  if [ -z "$$n" ]; then echo "agency $$i: NO ANSWER"; failed=1; \
	  elif [ "$$n" = 1 ]; then echo "agency $$i: 1 winner"; \
	  else echo "agency $$i: $$n winners"; fi; \
	done; \
	exit $$failed

_run:
	@LOG_PREFIX="server  | " SERVER_PORT=0 SERVER_BETS_FILE="$(ROUND_FILE)" SERVER_AGENCIES=$(CLIENTS) \
	  SERVER_TOKENS_FILE=$(TOKENS) $(SERVER_TLS_ENV) $(BIN)/server & \
	server=$$!; \
	for _ in $$(seq 200); do grep -q "^server  | .*action: config | result" "$(MERGED)" 2>/dev/null && break; sleep 0.05; done; \
	port=$$(grep -o "^server  | .*server_port: [0-9]*" "$(MERGED)" | grep -o "[0-9]*$$" || true); \
	if [ -z "$$port" ]; then echo "run: the server did not start (see above)"; wait $$server || true; exit 1; fi; \
	failed=0; \
	$(MAKE) --no-print-directory _clients SERVER_ADDRESS=127.0.0.1:$$port || failed=1; \
	kill -TERM $$server; wait $$server || { echo "run: the server exited with an error"; failed=1; }; \
	exit $$failed

# Audits a round's files without changing them (a server may be running on it).
verify: build
	@if [ -z "$(BETS_FILE)" ]; then \
	  echo "verify: name the round: make verify BETS_FILE=$(RUN_DIR)/bets-....csv CLIENTS=N" >&2; exit 2; fi
	@SERVER_BETS_FILE="$(BETS_FILE)" SERVER_AGENCIES=$(AGENCIES) $(BIN)/server --verify

test:
	cargo test --all-targets

bench:
	cargo build --release --bins --examples
	$(BIN)/examples/bench

bench-instructions: build
	bash examples/instructions.sh $(BIN)/server $(BIN)/client

data:
	cargo run --release --example gen_bets -- --agencies 5 --bets 10000 --out data

clean:
	rm -rf $(RUN_DIR)
	@echo "removed $(RUN_DIR)/ (bets files, logs, tokens and certificates of earlier runs)"

tokens:
	@$(call ensure_tokens,$(AGENCIES))
	@echo "tokens: $(TOKENS) (mode 0600), agencies 1 to $(AGENCIES)"

# A CA, and a server certificate it signs for localhost, 127.0.0.1 and ::1.
certs: $(TLS_DIR)/server.pem

$(TLS_DIR)/server.pem:
	@mkdir -p $(TLS_DIR); cd $(TLS_DIR); umask 077; \
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	  -keyout ca.key -out ca.pem -subj "/CN=lottery round CA" 2>/dev/null; \
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	  -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null; \
	printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" > server.ext; \
	openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
	  -extfile server.ext -out server.pem 2>/dev/null; \
	rm -f server.csr server.ext ca.srl; \
	echo "certificates: $(TLS_DIR)/ca.pem (the CA, for CLI_TLS_CA), $(TLS_DIR)/server.pem and server.key"
