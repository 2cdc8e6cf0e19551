#!/usr/bin/env bash
# Instructions per bet under valgrind --tool=callgrind, the regression guard of
# the work per bet: the same count whatever else the machine does.
#
# One round of the course's five agency files, each repeated ten times (786,970
# bets; the committed data/ stands in when ../shared/data is missing): once with
# the server under callgrind, once with the five clients under it. The figures
# leave out SHA-256's compression function, which valgrind runs without the
# CPU's SHA instructions (its real cost shows in `make bench`'s wall time).
#
# Usage: examples/instructions.sh [SERVER_BIN CLIENT_BIN]   (make bench-instructions)
set -euo pipefail
server=${1:-target/release/server}
client=${2:-target/release/client}
source_dir=${INSTRUCTIONS_DATA:-../shared/data}
[ -d "$source_dir" ] || source_dir=data
repeat=${INSTRUCTIONS_REPEAT:-10}
command -v valgrind >/dev/null || { echo "instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }

work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for i in 1 2 3 4 5; do
  for _ in $(seq "$repeat"); do cat "$source_dir/agency-$i.csv"; done > "$work/agency-$i.csv"
done
bets=$(cat "$work"/agency-*.csv | grep -c .)

# One round: $1 wraps the server, $2 each client, $3 names the run.
round() {
  env -i PATH="$PATH" SERVER_IP=127.0.0.1 SERVER_PORT=0 SERVER_AGENCIES=5 \
    SERVER_BETS_FILE="$work/bets-$3.csv" LOGGING_LEVEL=INFO \
    $1 "$server" 2>"$work/server-$3.log" &
  local server_pid=$! port=""
  for _ in $(seq 600); do
    port=$(grep -o "server_port: [0-9]*" "$work/server-$3.log" 2>/dev/null | grep -o "[0-9]*$" || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "instructions: the server did not start" >&2; cat "$work/server-$3.log" >&2; exit 1; }
  local pids=()
  for a in 1 2 3 4 5; do
    env -i PATH="$PATH" CLI_ID=$a CLI_SERVER_ADDRESS=127.0.0.1:$port \
      CLI_DATA_FILE="$work/agency-$a.csv" CLI_LOG_LEVEL=WARN CLI_TIMEOUT_S=600 \
      $2 "$client" >/dev/null 2>&1 & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  kill -TERM "$server_pid"
  wait "$server_pid"
}

# Instructions in the files given, and those of SHA-256's block function.
total() { cat "$@" | grep -h '^summary:' | awk '{s += $2} END {printf "%.0f\n", s}'; }
sha() {
  for f in "$@"; do callgrind_annotate --threshold=100 "$f" 2>/dev/null; done |
    { grep -i 'sha256_block' || true; } | awk '{gsub(",", "", $1); s += $1} END {printf "%.0f\n", s}'
}

callgrind="valgrind --tool=callgrind --quiet"
round "$callgrind --callgrind-out-file=$work/cg-server" "" server
round "" "$callgrind --callgrind-out-file=$work/cg-client.%p" clients
server_ir=$(total "$work"/cg-server)
server_sha=$(sha "$work"/cg-server)
client_ir=$(total "$work"/cg-client.*)
client_sha=$(sha "$work"/cg-client.*)
echo "round: $bets bets from $source_dir (each file $repeat times)"
echo "server: $(( (server_ir - server_sha) / bets )) instructions per bet ($(( server_sha / bets )) more in SHA-256's block function)"
echo "clients: $(( (client_ir - client_sha) / bets )) instructions per bet, the five together ($(( client_sha / bets )) more in SHA-256's block function)"
