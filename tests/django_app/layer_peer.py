"""A Channels consumer's side of the layer without Django: what a Daphne
consumer's channel receives, read with channels_redis's own receive().

    python layer_peer.py add   URL PREFIX GROUP CHANNEL CAPACITY EXPIRY
    python layer_peer.py read  URL PREFIX GROUP CHANNEL CAPACITY EXPIRY

`add` puts CHANNEL (a name without "!", so any process may read it) in
GROUP; `read` prints, as one JSON list, every message waiting on CHANNEL
(stops after 1 s without one). Used by tests/channel_layer.rs."""

import asyncio
import json
import sys

from channels_redis.core import RedisChannelLayer


async def main():
    cmd, url, prefix, group, channel, capacity, expiry = sys.argv[1:8]
    layer = RedisChannelLayer(
        hosts=[url], prefix=prefix, capacity=int(capacity), expiry=int(expiry)
    )
    if cmd == "add":
        await layer.group_add(group, channel)
        return
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(layer.receive(channel), 1.0))
        except asyncio.TimeoutError:
            break
    print(json.dumps(got))


asyncio.run(main())
