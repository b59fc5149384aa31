#!/usr/bin/env bash
# The protocol-v2 reconnect storm (issue 11): N sockets in C conversations
# come back at once with ?since=0 after each conversation got M messages,
# on the embedded store and on Postgres. Prints the load tool's report and
# the store reads the storm cost (chatgate_store_replay_reads_total).
#
#   loadtest/resume_storm.sh [sqlite|postgres ...]   (default: both)
#   SOCKETS=10000 CONVS=100 RATE=1000 SEED=5s
#
# Needs a release build (cargo build --release) and, for postgres, a
# PostgreSQL at 127.0.0.1:5432 (trust auth); it creates and drops its own
# database.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-target/release}
SOCKETS=${SOCKETS:-10000}
CONVS=${CONVS:-100}
RATE=${RATE:-1000}
SEED=${SEED:-5s}
PORT=${PORT:-18500}
ADMIN=${ADMIN:-18501}
SECRET=resume-storm-secret
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

replay_reads() {
  curl -s "http://127.0.0.1:$ADMIN/metrics" |
    awk '/^chatgate_store_replay_reads_total/ {s += $NF} END {print s + 0}'
}

run_one() {
  local store=$1 db_args=()
  case $store in
    sqlite) db_args=(--database "$work/storm.db") ;;
    postgres)
      psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS chatgate_storm" -c "CREATE DATABASE chatgate_storm"
      db_args=(--database-url "postgres://postgres@127.0.0.1:5432/chatgate_storm")
      $B/chatgate migrate "${db_args[@]}" >/dev/null ;;
  esac
  $B/chatgate-bench prepare "${db_args[@]}" --jwt-secret "$SECRET" --conversations "$CONVS" \
    --members $((SOCKETS / CONVS)) --url-base "ws://127.0.0.1:$PORT" --out "$work/plan.json" >/dev/null
  $B/chatgate "${db_args[@]}" --jwt-secret "$SECRET" --demo false --log warn \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" \
    --chat-rate 100000 --chat-burst 100000 --handshakes-per-ip 1000000 --handshake-ip-burst 1000000 &
  local gw=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
  echo "== $store: seeding $RATE msg/s for $SEED over $CONVS conversations"
  $B/chatgate-bench fanout --plan "$work/plan.json" --rate "$RATE" --duration "$SEED" --warmup 0s --quiet |
    head -1
  local before after
  before=$(replay_reads)
  echo "== $store: $SOCKETS v2 sockets resume with since=0 at once"
  $B/chatgate-bench resume --plan "$work/plan.json" --count "$SOCKETS" --since 0 \
    --connect-concurrency 2048 --quiet
  after=$(replay_reads)
  echo "   store replay reads: $((after - before)) for $SOCKETS resumes"
  kill -TERM $gw; wait $gw || true
  [ "$store" = postgres ] && psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE chatgate_storm"
  return 0
}

for store in "${@:-sqlite postgres}"; do
  for s in $store; do run_one "$s"; done
done
