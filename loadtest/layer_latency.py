"""Django -> chatgate latency through the Channels layer (loadtest/layer_run.sh).

One WebSocket client per conversation of a chatgate-bench plan connects to
chatgate; then this process, as Django code would, calls channels_redis's
RedisChannelLayer.group_send at RATE sends per second, round robin over the
conversations' groups, each a `chatgate.send` whose event carries the send
time. Latency = receive time - send time (one clock: one process). Prints
one JSON line: sent, received, lost, p50/p90/p99/max in ms.

    python layer_latency.py PLAN.json WS_BASE REDIS_URL PREFIX RATE SECONDS
"""

import asyncio
import json
import sys
import time

import websockets
from channels_redis.core import RedisChannelLayer


async def reader(ws, latencies, seen):
    async for text in ws:
        frame = json.loads(text)
        if frame.get("type") == "probe":
            latencies.append(time.monotonic_ns() - frame["t"])
            seen.add(frame["n"])


async def main():
    plan_path, ws_base, redis_url, prefix, rate, seconds = sys.argv[1:7]
    rate, seconds = int(rate), float(seconds)
    with open(plan_path) as f:
        plan = json.load(f)
    convs = plan["conversations"]
    latencies, seen = [], set()
    sockets = []
    for conv in convs:
        token = conv["members"][0]["token"]
        ws = await websockets.connect(
            f"{ws_base}/ws/chat/{conv['id']}/?token={token}", max_queue=None
        )
        first = json.loads(await ws.recv())
        assert first["type"] == "connection_established", first
        sockets.append(ws)
    readers = [asyncio.create_task(reader(ws, latencies, seen)) for ws in sockets]
    # Let the node's memberships reach Redis (joined within milliseconds).
    await asyncio.sleep(1.0)
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    interval = 1.0 / rate
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        due = start + n * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        conv = convs[n % len(convs)]
        await layer.group_send(
            f"chat_{conv['id']}",
            {
                "type": "chatgate.send",
                "event": {"type": "probe", "n": n, "t": time.monotonic_ns()},
            },
        )
        n += 1
    achieved = n / (time.monotonic() - start)
    await asyncio.sleep(2.0)
    for r in readers:
        r.cancel()
    for ws in sockets:
        await ws.close()
    latencies.sort()

    def q(p):
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6, 3)

    print(
        json.dumps(
            {
                "sent": n,
                "achieved_per_s": round(achieved, 1),
                "received": len(latencies),
                "lost": n - len(seen),
                "p50_ms": q(0.50),
                "p90_ms": q(0.90),
                "p99_ms": q(0.99),
                "max_ms": q(1.0),
            }
        )
    )


asyncio.run(main())
