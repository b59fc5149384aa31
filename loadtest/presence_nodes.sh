#!/usr/bin/env bash
# Presence cost on one node and on two nodes (issue 12): 10,000 sockets in
# 100 conversations of 100 connect at once, v1 (no presence frames) against
# v2 (presence_state + online events), gateways on Postgres, the two-node
# runs bridged by Redis (member j of a conversation uses node j mod nodes).
# Prints the load tool's connect figures and the gateways' CPU ticks
# (utime + stime from /proc, 1/100 s) over the connect phase and the hold.
#
#   loadtest/presence_nodes.sh            (ROUNDS=2 SOCKETS=10000)
#
# Needs a release build, PostgreSQL on 127.0.0.1:5432 (trust) and Redis on
# 127.0.0.1:6379; creates and drops the database chatgate_presence.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-target/release}
ROUNDS=${ROUNDS:-2}
SOCKETS=${SOCKETS:-10000}
SECRET=presence-nodes-secret
DB=postgres://postgres@127.0.0.1:5432/chatgate_presence
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS chatgate_presence" -c "CREATE DATABASE chatgate_presence"
$B/chatgate migrate --database-url "$DB" >/dev/null
$B/chatgate-bench prepare --database-url "$DB" --jwt-secret "$SECRET" --conversations 100 \
  --members $((SOCKETS / 100)) --url-base ws://127.0.0.1:18700 --out "$work/plan.json" >/dev/null

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # nodes v1|v2
  local nodes=$1 version=$2 pids=() urls=() prefix="pn$RANDOM"
  for n in $(seq 0 $((nodes - 1))); do
    local redis=()
    [ "$nodes" -gt 1 ] && redis=(--redis-url redis://127.0.0.1:6379 --redis-prefix "$prefix" --node-id "n$n")
    $B/chatgate --database-url "$DB" --jwt-secret "$SECRET" --demo false --log warn --admin-listen off \
      --listen "127.0.0.1:$((18700 + n))" "${redis[@]}" \
      --chat-rate 1000000 --chat-burst 1000000 --handshakes-per-ip 1000000 --handshake-ip-burst 1000000 &
    pids+=($!)
    urls+=("ws://127.0.0.1:$((18700 + n))")
  done
  sleep 1.5
  local before=() flag=()
  for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
  [ "$version" = v2 ] && flag=(--v2)
  echo "== $nodes node(s), $version"
  $B/chatgate-bench conns --plan "$work/plan.json" --url "$(IFS=,; echo "${urls[*]}")" \
    --count "$SOCKETS" --hold 3s --source-ips 127.0.0.2,127.0.0.3 --quiet "${flag[@]}" | head -2
  local i=0 spent=""
  for p in "${pids[@]}"; do spent+=" $(( $(ticks "$p") - before[i] ))"; i=$((i + 1)); done
  echo "   gateway CPU ticks per node:$spent"
  kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
}

for _ in $(seq 1 "$ROUNDS"); do
  for nodes in 1 2; do
    run "$nodes" v1
    run "$nodes" v2
  done
done
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE chatgate_presence"
