#!/usr/bin/env bash
# Reproduces the store runs of loadtest/RESULTS.md ("Issue 14"): a gateway
# on the embedded store or on Postgres, one fan-out run or an offered-rate
# ladder against it, and (Postgres) the CPU seconds its Postgres backends
# spent per committed message, read from /proc.
#
#   loadtest/store_run.sh prepare                  # databases and plans (once)
#   loadtest/store_run.sh fanout GW STORE PLAN RATE [SENDERS]
#   loadtest/store_run.sh ladder GW STORE PLAN LABEL RATES [SENDERS]
#
# GW: a gateway binary (e.g. target/release/chatgate, or an older build
# kept elsewhere to compare); STORE: sqlite | pg; PLAN: 100x50 | 10x1000 |
# 100x10 (the plans `prepare` wrote for that store); RATES: 5000,10000,...
#
# Environment: GW (gateway used by `prepare` to migrate, default
# target/release/chatgate), BENCH (chatgate-bench binary, default
# target/release/chatgate-bench), PGURL (default
# postgres://postgres@127.0.0.1:5432/chatgate_bench14), WORK (databases,
# plans, logs; default /tmp/chatgate-store-run), PORT (default 18514),
# DURATION (10s), WARMUP (2s), LADDER_DATA / LADDER_SVG (ladder output,
# default loadtest/ladder-postgres.json / .svg).
#
# Postgres CPU: utime + stime (/proc/PID/stat) of every backend of the
# bench database, summed before and after the run (backends that appear
# during the run count from zero), divided by the chatapp_message rows the
# run added. Shared processes (WAL writer, checkpointer) are not included.
set -euo pipefail

BENCH=${BENCH:-target/release/chatgate-bench}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/chatgate_bench14}
WORK=${WORK:-/tmp/chatgate-store-run}
PORT=${PORT:-18514}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
SECRET=store-run-secret
LOAD_FLAGS=(--chat-rate 1000000 --chat-burst 1000000 --handshakes-per-ip 1000000
    --handshake-ip-burst 1000000 --admin-listen off --demo false --log warn)
PGDB=${PGURL##*/}
PGSERVER=${PGURL%/*}/postgres
TICKS=$(getconf CLK_TCK)
mkdir -p "$WORK"

psql_db() { psql "$PGURL" -qtAX -c "$1"; }

prepare() {
    psql "$PGSERVER" -qtAX -c "CREATE DATABASE $PGDB" 2>/dev/null || true
    DATABASE_URL=$PGURL CHATGATE_JWT_SECRET=$SECRET "${GW:-target/release/chatgate}" migrate
    for shape in 100x50 10x1000 100x10; do
        local c=${shape%x*} m=${shape#*x}
        "$BENCH" prepare --database-url "$PGURL" --jwt-secret "$SECRET" \
            --conversations "$c" --members "$m" --out "$WORK/pg-$shape.json"
        "$BENCH" prepare --database "$WORK/sqlite.db" \
            --conversations "$c" --members "$m" --out "$WORK/sqlite-$shape.json"
    done
}

# start_gateway GW STORE: starts it in the background, sets GW_PID.
start_gateway() {
    local gw=$1 store=$2
    local args=(--listen "127.0.0.1:$PORT" "${LOAD_FLAGS[@]}")
    if [[ $store == pg ]]; then
        args+=(--database-url "$PGURL" --jwt-secret "$SECRET")
    else
        args+=(--database "$WORK/sqlite.db")
    fi
    "$gw" "${args[@]}" >"$WORK/gateway.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
        sleep 0.1
    done
    echo "gateway did not listen on $PORT" >&2
    exit 1
}

stop_gateway() {
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
}

# Lines "pid ticks" for every backend of the bench database.
backend_ticks() {
    for pid in $(psql_db "SELECT pid FROM pg_stat_activity WHERE datname = '$PGDB' AND pid <> pg_backend_pid()"); do
        # Fields 14 and 15 (utime, stime), counted after the ")" of the name.
        local stat
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        awk -v pid="$pid" '{ sub(/^.*\) /, ""); print pid, $12 + $13 }' <<<"$stat"
    done
}

# cpu_seconds BEFORE AFTER: seconds spent between two backend_ticks snapshots.
cpu_seconds() {
    awk -v hz="$TICKS" 'NR == FNR { before[$1] = $2; next }
        { total += $2 - before[$1] } END { printf "%.3f", total / hz }' "$1" "$2"
}

fanout() {
    local gw=$1 store=$2 plan=$3 rate=$4 senders=${5:-1}
    start_gateway "$gw" "$store"
    local before_rows=0
    if [[ $store == pg ]]; then
        # Every run starts from a vacuumed participant table: Postgres on
        # this machine kind runs with autovacuum off, and the unread-count
        # updates of earlier runs would otherwise pile up as dead rows.
        psql_db "VACUUM (ANALYZE) chatapp_conversationparticipant"
        before_rows=$(psql_db "SELECT count(*) FROM chatapp_message")
        backend_ticks >"$WORK/ticks.before"
    fi
    "$BENCH" fanout --plan "$WORK/$store-$plan.json" --url "ws://127.0.0.1:$PORT" \
        --senders-per-conv "$senders" --rate "$rate" --duration "$DURATION" --warmup "$WARMUP" \
        --source-ips 127.0.0.2,127.0.0.3 --gateway-pid "$GW_PID" --quiet --json \
        >"$WORK/fanout.json" || true
    if [[ $store == pg ]]; then
        backend_ticks >"$WORK/ticks.after"
        local rows cpu
        rows=$(( $(psql_db "SELECT count(*) FROM chatapp_message") - before_rows ))
        cpu=$(cpu_seconds "$WORK/ticks.before" "$WORK/ticks.after")
        echo "postgres backends: $cpu CPU s for $rows messages = $(awk -v c="$cpu" -v r="$rows" 'BEGIN { printf "%.1f", r ? c / r * 1e6 : 0 }') us/message"
    fi
    stop_gateway
    jq -r '"offered \(.target_rate) msg/s: committed \(.committed_per_s|floor)/s, deliveries \(.deliveries_per_s|floor)/s, lost \(.lost), p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, ok \(.ok)"' "$WORK/fanout.json"
}

ladder() {
    local gw=$1 store=$2 plan=$3 label=$4 rates=$5 senders=${6:-1}
    start_gateway "$gw" "$store"
    "$BENCH" ladder --plan "$WORK/$store-$plan.json" --url "ws://127.0.0.1:$PORT" \
        --senders-per-conv "$senders" --rates "$rates" --duration "$DURATION" --warmup "$WARMUP" \
        --source-ips 127.0.0.2,127.0.0.3 --label "$label" \
        --data "${LADDER_DATA:-loadtest/ladder-postgres.json}" \
        --svg "${LADDER_SVG:-loadtest/ladder-postgres.svg}" || true
    stop_gateway
}

cmd=${1:-}
shift || true
case $cmd in
    prepare) prepare ;;
    fanout) fanout "$@" ;;
    ladder) ladder "$@" ;;
    *) sed -n '2,20p' "$0"; exit 64 ;;
esac
