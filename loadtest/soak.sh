#!/usr/bin/env bash
# Soak (issue 23; not in CI): DURATION seconds of mixed traffic against
#   sqlite: one gateway on the embedded store;
#   pg:     two gateways on Postgres, bridged through Redis;
# sampling every SAMPLE s, per gateway process: RSS (VmRSS), open
# descriptors (/proc/PID/fd), threads (/proc/PID/task), open sockets
# (chatgate_connections_open), the Redis bridge's queue depth
# (chatgate_bridge_queue_depth, the only queue the gateway exports) and
# deliveries/s (chatgate_events_delivered_total), into a CSV; then
# `chatgate-bench soak-plot` draws it and prints the verdict per series:
# flat within 10 % after WARMUP s (mean of the last fifth of the samples
# against the first fifth).
#
# Traffic, for the whole run, per store:
#   - protocol v1: `chatgate-bench fanout`, 10 x 10 sockets held open, RATE msg/s;
#   - protocol v2: the same on another plan, with --v2 (presence, read state);
#   - churn: `chatgate-bench soak`, CLIENTS clients connecting, sending a
#     message and typing on/off, (v2, every other session) resuming with
#     ?since=, reacting on/off, mark_read, history, holding 2 s, closing;
#   - the server API, about once a second: send_message (with and without
#     idempotency_key), publish, presence, info, batch, and every tenth
#     round a disconnect (the churn counts its 4003 as expected).
#
#   loadtest/soak.sh [sqlite|pg|both]          (default both)
#
# Environment: DURATION (3600, seconds), SAMPLE (10), WARMUP (300; at most
# a third of DURATION), PARALLEL (1: with "both", the two stores run at the
# same time; 0: one after the other), RATE (40), CLIENTS (16), B
# (target/release: chatgate and chatgate-bench), OUT (loadtest: where
# soak-<store>.csv and .svg go), WORK (/tmp/chatgate-soak), PGURL
# (postgres://postgres@127.0.0.1:5432/chatgate_soak, created and dropped),
# REDIS (redis://127.0.0.1:6379). Exit status 0 when every series of every
# store is flat and every load tool's checks held.
set -uo pipefail
cd "$(dirname "$0")/.."
WHICH=${1:-both}
DURATION=${DURATION:-3600}
SAMPLE=${SAMPLE:-10}
WARMUP=${WARMUP:-300}
((WARMUP > DURATION / 3)) && WARMUP=$((DURATION / 3))
PARALLEL=${PARALLEL:-1}
RATE=${RATE:-40}
CLIENTS=${CLIENTS:-16}
B=${B:-target/release}
OUT=${OUT:-loadtest}
WORK=${WORK:-/tmp/chatgate-soak}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432/chatgate_soak}
REDIS=${REDIS:-redis://127.0.0.1:6379}
SECRET=soak-secret
export API_KEY=soak-api-key
LIMITS=(--chat-rate 100000 --chat-burst 100000 --typing-rate 100000 --typing-burst 100000
    --handshakes-per-ip 1000000 --handshake-ip-burst 1000000 --max-conns-per-user 1000)
mkdir -p "$WORK"
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT

# sum_metric PORT NAME: the sum of every sample of NAME on the admin port.
sum_metric() {
    curl -s --max-time 3 "http://127.0.0.1:$1/metrics" |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF; f = 1} END {if (f) printf "%.0f", s}'
}

# sampler CSV END NODE:PID:ADMIN…: one row per node every SAMPLE s until END.
sampler() {
    local csv=$1 end=$2 t0 now
    shift 2
    declare -A delivered
    echo "t_s,node,rss_kib,fds,threads,connections_open,bridge_queue_depth,deliveries_per_s" >"$csv"
    t0=$(date +%s)
    while :; do
        now=$(date +%s)
        for spec in "$@"; do
            IFS=: read -r node pid admin <<<"$spec"
            [ -d "/proc/$pid" ] || continue
            local rss fds threads conns queue total rate=""
            rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
            fds=$(ls "/proc/$pid/fd" | wc -l)
            threads=$(ls "/proc/$pid/task" | wc -l)
            conns=$(sum_metric "$admin" chatgate_connections_open)
            queue=$(sum_metric "$admin" chatgate_bridge_queue_depth)
            total=$(sum_metric "$admin" chatgate_events_delivered_total)
            if [ -n "$total" ] && [ -n "${delivered[$node]:-}" ]; then
                rate=$(((total - delivered[$node]) / SAMPLE))
            fi
            delivered[$node]=$total
            echo "$((now - t0)),$node,$rss,$fds,$threads,$conns,$queue,$rate" >>"$csv"
        done
        ((now >= end)) && return
        sleep "$SAMPLE"
    done
}

# api_call PORT METHOD JSON: one server API call; appends "METHOD STATUS" to
# api.log, and the answer of anything but a 200 to api-errors.log.
api_call() {
    local status
    status=$(curl -s -o "$dir/api.answer" -w '%{http_code}' --max-time 5 -X POST \
        -H 'Content-Type: application/json' -H "X-API-Key: $API_KEY" \
        --data "$3" "http://127.0.0.1:$1/api/$2")
    echo "$2 $status" >>"$dir/api.log"
    [ "$status" = 200 ] || echo "$(date +%T) $2 $status $(cat "$dir/api.answer")" >>"$dir/api-errors.log"
}

# api_loop END PORT…: server API calls, about one round a second, until END.
api_loop() {
    local end=$1 i=0 n conv user port
    shift
    mapfile -t pairs < <(jq -r '.conversations[] | "\(.id) \(.members[0].user_id) \(.members[1].user_id)"' "$dir/churn.json")
    n=${#pairs[@]}
    while (($(date +%s) < end)); do
        read -r conv user other <<<"${pairs[i % n]}"
        port=$1
        (($# > 1 && i % 2 == 1)) && port=$2
        api_call "$port" send_message "{\"conversation_id\":$conv,\"sender_id\":$user,\"content\":\"api $i\"}"
        api_call "$port" send_message "{\"conversation_id\":$conv,\"sender_id\":$user,\"content\":\"key $i\",\"idempotency_key\":\"soak-$i\"}"
        api_call "$port" publish "{\"conversation_id\":$conv,\"event\":{\"type\":\"soak\",\"n\":$i}}"
        api_call "$port" presence "{\"conversation_id\":$conv}"
        api_call "$port" info "{}"
        api_call "$port" batch "{\"commands\":[{\"method\":\"info\"},{\"method\":\"presence\",\"params\":{\"conversation_id\":$conv}},{\"method\":\"publish\",\"params\":{\"conversation_id\":$conv,\"event\":{\"type\":\"soak\"}}}]}"
        ((i % 10 == 9)) && api_call "$port" disconnect "{\"user_id\":$other,\"conversation_id\":$conv}"
        i=$((i + 1))
        sleep 1
    done
}

# wait_ready ADMIN: until the gateway answers /readyz.
wait_ready() {
    for _ in $(seq 1 200); do
        curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
        sleep 0.1
    done
    echo "gateway on admin port $1 never became ready" >&2
    return 1
}

# run_store STORE PORT: the whole soak on one store; prints its verdict.
run_store() {
    local store=$1 port=$2 db_args=() gw_args=() urls specs=() api_ports=() pids=()
    dir=$WORK/$store
    rm -rf "$dir" && mkdir -p "$dir"
    case $store in
        sqlite) db_args=(--database "$dir/soak.db") ;;
        pg)
            psql "${PGURL%/*}/postgres" -qtAX -c "DROP DATABASE IF EXISTS ${PGURL##*/}" \
                -c "CREATE DATABASE ${PGURL##*/}" >/dev/null || return 1
            db_args=(--database-url "$PGURL")
            "$B/chatgate" migrate --database-url "$PGURL" >/dev/null || return 1
            gw_args=(--redis-url "$REDIS" --redis-prefix "soak-$$")
            ;;
    esac
    local nodes=1
    [ "$store" = pg ] && nodes=2
    urls=""
    for n in $(seq 0 $((nodes - 1))); do
        local p=$((port + 3 * n))
        "$B/chatgate" "${db_args[@]}" "${gw_args[@]}" --jwt-secret "$SECRET" --demo false --log warn \
            --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$((p + 1))" \
            --api-listen "127.0.0.1:$((p + 2))" --api-key "$API_KEY" --node-id "$store-$n" \
            "${LIMITS[@]}" >"$dir/gateway-$n.log" 2>&1 &
        pids+=($!)
        wait_ready $((p + 1)) || return 1
        specs+=("$store-$n:${pids[n]}:$((p + 1))")
        api_ports+=($((p + 2)))
        urls+="${urls:+,}ws://127.0.0.1:$p"
    done
    for plan in v1 v2 churn; do
        local c=10 m=10
        [ $plan = churn ] && c=20 m=5
        "$B/chatgate-bench" prepare "${db_args[@]}" --jwt-secret "$SECRET" --conversations $c \
            --members $m --prefix "soak_$plan" --ttl 48h --out "$dir/$plan.json" >/dev/null || return 1
    done
    local end=$(($(date +%s) + DURATION))
    # The load outlasts the sampling a little: no sample sees it stop.
    local load=$((DURATION + SAMPLE + 5))
    echo "== $store: $nodes gateway(s) (pids ${pids[*]}), $DURATION s, samples every $SAMPLE s"
    sampler "$dir/samples.csv" "$end" "${specs[@]}" &
    local sampler_pid=$!
    "$B/chatgate-bench" fanout --plan "$dir/v1.json" --url "$urls" --rate "$RATE" \
        --duration "${load}s" --warmup 0s --drain 10s --quiet >"$dir/fanout-v1.txt" 2>&1 &
    local f1=$!
    "$B/chatgate-bench" fanout --plan "$dir/v2.json" --url "$urls" --rate "$RATE" --v2 \
        --duration "${load}s" --warmup 0s --drain 10s --quiet >"$dir/fanout-v2.txt" 2>&1 &
    local f2=$!
    "$B/chatgate-bench" soak --plan "$dir/churn.json" --url "$urls" --clients "$CLIENTS" \
        --duration "${load}s" --source-ips 127.0.0.2,127.0.0.3,127.0.0.4 --quiet \
        >"$dir/churn.txt" 2>&1 &
    local churn=$!
    api_loop "$((end + SAMPLE))" "${api_ports[@]}" &
    local api=$!
    local ok=0
    wait $f1 || ok=1
    wait $f2 || ok=1
    wait $churn || ok=1
    wait $api
    wait $sampler_pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid"
        wait "$pid" || echo "gateway $pid exited with $?" >>"$dir/api.log"
    done
    [ "$store" = pg ] && psql "${PGURL%/*}/postgres" -qtAX -c "DROP DATABASE ${PGURL##*/}" >/dev/null
    report "$store" "$dir" || ok=1
    return $ok
}

# report STORE DIR: the load tools' results, the API's statuses, the chart and verdict.
report() {
    local store=$1 dir=$2
    cp "$dir/samples.csv" "$OUT/soak-$store.csv"
    {
        echo "== $store: fanout v1: $(head -1 "$dir/fanout-v1.txt")"
        grep -E 'lost|result' "$dir/fanout-v1.txt" | sed 's/^/   /'
        echo "== $store: fanout v2: $(head -1 "$dir/fanout-v2.txt")"
        grep -E 'lost|result' "$dir/fanout-v2.txt" | sed 's/^/   /'
        echo "== $store: churn:"
        sed 's/^/   /' "$dir/churn.txt"
        echo "== $store: server API calls (method status count):"
        sort "$dir/api.log" | uniq -c | awk '{printf "   %s %s %s\n", $2, $3, $1}'
        [ -f "$dir/api-errors.log" ] && sed 's/^/   refused: /' "$dir/api-errors.log"
        echo "== $store: gateway log lines: $(cat "$dir"/gateway-*.log | wc -l)"
        echo "== $store: samples ($(($(wc -l <"$dir/samples.csv") - 1)) rows):"
    } | tee "$dir/summary.txt"
    "$B/chatgate-bench" soak-plot --csv "$dir/samples.csv" --svg "$OUT/soak-$store.svg" \
        --warmup "$WARMUP" --title "chatgate soak, $store, ${DURATION} s" | tee -a "$dir/summary.txt"
}

status=0
case $WHICH in
    sqlite) run_store sqlite 18600 || status=1 ;;
    pg) run_store pg 18610 || status=1 ;;
    both)
        if [ "$PARALLEL" = 1 ]; then
            run_store sqlite 18600 >"$WORK/sqlite.out" 2>&1 &
            s=$!
            run_store pg 18610 >"$WORK/pg.out" 2>&1 &
            p=$!
            wait $s || status=1
            wait $p || status=1
            cat "$WORK/sqlite.out" "$WORK/pg.out"
        else
            run_store sqlite 18600 || status=1
            run_store pg 18610 || status=1
        fi
        ;;
    *) echo "usage: $0 [sqlite|pg|both]" >&2; exit 64 ;;
esac
echo "soak: $([ $status = 0 ] && echo OK || echo 'FAILED (see above)')"
exit $status
