#!/usr/bin/env bash
# Issue 21: 100 x 50 fan-out across three gateway nodes, bridged by one
# Redis and by a Redis Cluster of three primaries (and three replicas), in
# the same run. One sender per conversation; member j of a conversation
# uses node j mod 3, so two thirds of every message's deliveries cross
# nodes. Prints, per setup: deliveries/s and cross-node deliveries/s, p50 /
# p99 latency, loss, and Redis CPU (INFO cpu, user + sys, summed over the
# setup's Redis processes; primaries alone too) per delivered message.
#
#   loadtest/cluster_fanout.sh          (RATE=2000 DURATION=10s ROUNDS=2)
#
# Needs a release build (target/release or B=…), PostgreSQL on
# 127.0.0.1:5432 (trust), redis-server and redis-cli. Starts its own Redis
# servers on 17100 (one Redis) and 17001-17006 (the cluster; bus ports
# +10000), creates and drops the database chatgate_cluster, and stops
# everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-target/release}
RATE=${RATE:-2000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-2}
SECRET=cluster-fanout-secret
DB=postgres://postgres@127.0.0.1:5432/chatgate_cluster
ONE=17100
CLUSTER=(17001 17002 17003 17004 17005 17006)
work=$(mktemp -d)

stop_redis() {
  for p in "$ONE" "${CLUSTER[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
}
trap 'kill $(jobs -p) 2>/dev/null || true; stop_redis; rm -rf "$work"' EXIT

redis() { # port [extra args]
  local port=$1; shift
  mkdir -p "$work/r$port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --dir "$work/r$port" --logfile "$work/r$port/log" "$@" >/dev/null
}

redis "$ONE"
for p in "${CLUSTER[@]}"; do
  redis "$p" --cluster-enabled yes --cluster-node-timeout 2000 \
    --cluster-replica-validity-factor 0 --repl-diskless-sync-delay 0
done
sleep 0.5
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER[@]}") --cluster-replicas 1 --cluster-yes >/dev/null
until redis-cli -p "${CLUSTER[0]}" cluster info | grep -q 'cluster_state:ok'; do sleep 0.2; done
sleep 2 # replicas' first sync

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS chatgate_cluster" -c "CREATE DATABASE chatgate_cluster"
$B/chatgate migrate --database-url "$DB" >/dev/null
$B/chatgate-bench prepare --database-url "$DB" --jwt-secret "$SECRET" --conversations 100 \
  --members 50 --url-base ws://127.0.0.1:18800 --out "$work/plan.json" >/dev/null

cpu() { # ports… → user+sys seconds summed
  local total=0
  for p in "$@"; do
    total=$(redis-cli -p "$p" info cpu | tr -d '\r' |
      awk -F: -v t="$total" '/^used_cpu_(user|sys):/ {t += $2} END {print t}')
  done
  echo "$total"
}

primaries() {
  redis-cli -p "${CLUSTER[0]}" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {split($2, a, "[:@]"); print a[2]}'
}

run() { # one|cluster
  local mode=$1 pids=() urls=() prefix="cf$RANDOM" bridge ports
  if [ "$mode" = one ]; then
    bridge=(--redis-url "redis://127.0.0.1:$ONE/")
    ports=("$ONE")
  else
    bridge=()
    for p in "${CLUSTER[@]}"; do bridge+=(--redis-cluster "redis://127.0.0.1:$p"); done
    ports=("${CLUSTER[@]}")
  fi
  for n in 0 1 2; do
    $B/chatgate --database-url "$DB" --jwt-secret "$SECRET" --demo false --log warn --admin-listen off \
      --listen "127.0.0.1:$((18800 + n))" "${bridge[@]}" --redis-prefix "$prefix" --node-id "n$n" \
      --chat-rate 1000000 --chat-burst 1000000 --handshakes-per-ip 1000000 --handshake-ip-burst 1000000 &
    pids+=($!)
    urls+=("ws://127.0.0.1:$((18800 + n))")
  done
  sleep 2
  local before before_p prim
  prim=($( [ "$mode" = one ] && echo "$ONE" || primaries ))
  before=$(cpu "${ports[@]}")
  before_p=$(cpu "${prim[@]}")
  $B/chatgate-bench fanout --plan "$work/plan.json" --url "$(IFS=,; echo "${urls[*]}")" \
    --rate "$RATE" --duration "$DURATION" --warmup 2s --drain 10s \
    --source-ips 127.0.0.2,127.0.0.3 --quiet --json >"$work/out.json" || true
  local after after_p
  after=$(cpu "${ports[@]}")
  after_p=$(cpu "${prim[@]}")
  kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  python3 - "$work/out.json" "$mode" "$before" "$after" "$before_p" "$after_p" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
mode = sys.argv[2]
cpu = float(sys.argv[4]) - float(sys.argv[3])
cpu_p = float(sys.argv[6]) - float(sys.argv[5])
d = max(r["deliveries_total"], 1)
print(f"{mode:8} deliveries/s {r['deliveries_per_s']:>10,.0f}  cross-node/s {r['cross_node_per_s']:>9,.0f}"
      f"  p50 {r['latency']['p50_ms']:.1f} ms  p99 {r['latency']['p99_ms']:.1f} ms"
      f"  lost {r['lost']}  ok {r['ok']}")
print(f"         Redis CPU {cpu:.2f} s ({cpu * 1e6 / d:.2f} µs per delivery; primaries {cpu_p:.2f} s,"
      f" {cpu_p * 1e6 / d:.2f} µs) for {r['deliveries_total']:,} deliveries of {r['sent_total']:,} messages")
EOF
}

echo "100 x 50, one sender per conversation, $RATE msg/s offered for $DURATION, 3 gateway nodes"
for _ in $(seq 1 "$ROUNDS"); do
  run one
  run cluster
done
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE chatgate_cluster"
