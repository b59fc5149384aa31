#!/usr/bin/env bash
# The Channels layer's cost and Django -> chatgate latency, one run
# (loadtest/RESULTS.md "Issue 19"):
#   1. v1 fan-out, 100 conversations x 50 members, one sender each, RATE
#      msg/s offered, against a gateway WITHOUT the layer and one WITH
#      --channel-layer (no foreign members: nobody on Daphne), alternated
#      ROUNDS times so both see the same machine;
#   2. Django -> chatgate: channels_redis's own group_send (a Python process,
#      as Django code calls it) of `chatgate.send` probes at LAT_RATE/s over
#      the 100 groups, received by one socket per conversation
#      (loadtest/layer_latency.py): p50/p99.
#
#   loadtest/layer_run.sh
#
# Environment: GW (target/release/chatgate), BENCH
# (target/release/chatgate-bench), REDIS (redis://127.0.0.1:6379/), WORK
# (/tmp/chatgate-layer-run), PORT (18530), RATE (10000), DURATION (10s),
# ROUNDS (3), LAT_RATE (1000), LAT_SECONDS (20). Needs jq and python3; makes
# a venv with channels_redis 4.3 and websockets in $WORK/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
GW=${GW:-target/release/chatgate}
BENCH=${BENCH:-target/release/chatgate-bench}
REDIS=${REDIS:-redis://127.0.0.1:6379/}
WORK=${WORK:-/tmp/chatgate-layer-run}
PORT=${PORT:-18530}
RATE=${RATE:-10000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
LAT_RATE=${LAT_RATE:-1000}
LAT_SECONDS=${LAT_SECONDS:-20}
PREFIX="layerrun$$"
mkdir -p "$WORK"

if [[ ! -x $WORK/venv/bin/python ]]; then
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q "channels_redis==4.3.0" "channels==4.3.1" \
        "redis==6.4.0" "websockets==15.0.1"
fi

rm -f "$WORK"/sqlite.db*
"$BENCH" prepare --database "$WORK/sqlite.db" --conversations 100 --members 50 \
    --out "$WORK/plan.json" >/dev/null

GW_PID=
stop_gateway() {
    if [[ -n $GW_PID ]]; then
        kill -TERM "$GW_PID" 2>/dev/null || true
        wait "$GW_PID" 2>/dev/null || true
        GW_PID=
    fi
}
trap stop_gateway EXIT

start_gateway() { # extra flags...
    "$GW" --listen "127.0.0.1:$PORT" --database "$WORK/sqlite.db" \
        --chat-rate 1000000 --chat-burst 1000000 --handshakes-per-ip 1000000 \
        --handshake-ip-burst 1000000 --admin-listen off --demo false --log warn \
        --drain-grace 0s "$@" >"$WORK/gateway.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
        sleep 0.1
    done
    echo "gateway did not start:"; cat "$WORK/gateway.log"; exit 1
}

fanout() { # label
    "$BENCH" fanout --plan "$WORK/plan.json" --url "ws://127.0.0.1:$PORT" --rate "$RATE" \
        --duration "$DURATION" --warmup 2s --source-ips 127.0.0.2,127.0.0.3 --quiet --json \
        >"$WORK/fanout-$1.json" || true
    jq -r --arg l "$1" '"\($l): deliveries \(.deliveries_per_s|floor)/s, committed \(.committed_per_s|floor)/s, p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, lost \(.lost)"' \
        "$WORK/fanout-$1.json"
}

LAYER=(--channel-layer "$REDIS" --channel-layer-prefix "$PREFIX" --node-id layerrun)
echo "== v1 fan-out 100 x 50, $RATE msg/s offered, layer off vs on (no foreign members)"
for round in $(seq "$ROUNDS"); do
    start_gateway; fanout "off-$round"; stop_gateway
    start_gateway "${LAYER[@]}"; fanout "on-$round"; stop_gateway
done
jq -s '[.[] | .deliveries_per_s] | add / length' "$WORK"/fanout-off-*.json >"$WORK/off.avg"
jq -s '[.[] | .deliveries_per_s] | add / length' "$WORK"/fanout-on-*.json >"$WORK/on.avg"
echo "mean deliveries/s: off $(cat "$WORK/off.avg"), on $(cat "$WORK/on.avg"), on/off $(jq -n "$(cat "$WORK/on.avg") / $(cat "$WORK/off.avg") * 1000 | floor / 1000")"

echo "== Django -> chatgate: channels_redis group_send at $LAT_RATE/s for ${LAT_SECONDS}s"
start_gateway "${LAYER[@]}"
"$WORK/venv/bin/python" loadtest/layer_latency.py "$WORK/plan.json" "ws://127.0.0.1:$PORT" \
    "$REDIS" "$PREFIX" "$LAT_RATE" "$LAT_SECONDS"
stop_gateway
