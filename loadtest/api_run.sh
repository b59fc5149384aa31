#!/usr/bin/env bash
# Server API throughput beside the socket path, one gateway, same run
# (loadtest/RESULTS.md "Issue 20"):
#   1. the socket path: `chatgate-bench fanout` on a 100 x 2 plan (one
#      sender and one receiver per conversation) at RATE msg/s offered;
#   2. `send_message` through the server API: wrk, 2 threads, CONNS
#      keep-alive connections, round robin over the plan's senders;
#   3. `publish` the same way (no socket connected: the cost of the call,
#      the shard hop and the framing).
#
#   loadtest/api_run.sh STORE      # sqlite | pg
#
# Environment: GW (target/release/chatgate), BENCH
# (target/release/chatgate-bench), PGURL (default
# postgres://postgres@127.0.0.1:5432/chatgate_bench20), WORK
# (/tmp/chatgate-api-run), PORT (18520), API_PORT (18521), DURATION (10s),
# RATE (20000), CONNS (32). Needs wrk and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:?sqlite or pg}
GW=${GW:-target/release/chatgate}
BENCH=${BENCH:-target/release/chatgate-bench}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/chatgate_bench20}
WORK=${WORK:-/tmp/chatgate-api-run}
PORT=${PORT:-18520}
API_PORT=${API_PORT:-18521}
DURATION=${DURATION:-10s}
RATE=${RATE:-20000}
CONNS=${CONNS:-32}
SECRET=api-run-secret
export API_KEY=api-run-key
mkdir -p "$WORK"

store_args=()
if [[ $STORE == pg ]]; then
    psql "${PGURL%/*}/postgres" -qtAX -c "DROP DATABASE IF EXISTS ${PGURL##*/}" >/dev/null
    psql "${PGURL%/*}/postgres" -qtAX -c "CREATE DATABASE ${PGURL##*/}" >/dev/null
    DATABASE_URL=$PGURL CHATGATE_JWT_SECRET=$SECRET "$GW" migrate >/dev/null
    "$BENCH" prepare --database-url "$PGURL" --jwt-secret "$SECRET" \
        --conversations 100 --members 2 --out "$WORK/plan.json" >/dev/null
    store_args=(--database-url "$PGURL" --jwt-secret "$SECRET")
else
    rm -f "$WORK"/sqlite.db*
    "$BENCH" prepare --database "$WORK/sqlite.db" \
        --conversations 100 --members 2 --out "$WORK/plan.json" >/dev/null
    store_args=(--database "$WORK/sqlite.db")
fi
jq -r '.conversations[] | "\(.id) \(.members[0].user_id)"' "$WORK/plan.json" >"$WORK/pairs.txt"
export PAIRS=$WORK/pairs.txt

"$GW" --listen "127.0.0.1:$PORT" --api-listen "127.0.0.1:$API_PORT" --api-key "$API_KEY" \
    --chat-rate 1000000 --chat-burst 1000000 --handshakes-per-ip 1000000 \
    --handshake-ip-burst 1000000 --admin-listen off --demo false --log warn \
    "${store_args[@]}" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
trap 'kill -TERM $GW_PID 2>/dev/null || true; wait $GW_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null; then break; fi
    sleep 0.1
done

echo "== $STORE: socket path (chatgate-bench fanout, 100 x 2, one sender each, $RATE msg/s offered)"
"$BENCH" fanout --plan "$WORK/plan.json" --url "ws://127.0.0.1:$PORT" --rate "$RATE" \
    --duration "$DURATION" --warmup 2s --source-ips 127.0.0.2,127.0.0.3 --quiet --json \
    >"$WORK/fanout.json" || true
jq -r '"socket chat_message: committed \(.committed_per_s|floor)/s, p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, lost \(.lost)"' "$WORK/fanout.json"

for mode in send_message publish; do
    echo "== $STORE: server API $mode (wrk, $CONNS connections)"
    MODE=$mode wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s loadtest/api_send.lua \
        "http://127.0.0.1:$API_PORT" | grep -E "requests/s|Non-2xx|Socket errors" || true
done
