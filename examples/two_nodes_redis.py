"""Two nodes on one Redis: one cluster.

Starts two servers (node A and node B), each with its own connection to Redis, as two
processes or machines would have; a client on each node joins the same channel. The
script prints what crosses the nodes: the cluster-wide presence both nodes see, and a
message published on A that arrives on B. In production each node is its own
process (``realtime-lab serve --broker redis://... --port 8001``, docs/deploy.md).

    python examples/two_nodes_redis.py [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio

import realtime_lab


async def main(redis_url: str) -> None:
    node_a = await realtime_lab.serve(port=0, broker=redis_url)
    node_b = await realtime_lab.serve(port=0, broker=redis_url)
    print(f"node A {node_a.url}, node B {node_b.url}, broker {redis_url}", flush=True)
    ada = await realtime_lab.connect(node_a.url, user="ada")
    bob = await realtime_lab.connect(node_b.url, user="bob")
    try:
        await ada.subscribe("lobby")
        await bob.subscribe("lobby")
        async with asyncio.timeout(10):  # presence reaches the other node through Redis
            while set(node_a.presence("lobby")) != {"ada", "bob"}:
                await asyncio.sleep(0.05)
        print(f"members seen by node A: {sorted(node_a.presence('lobby'))}", flush=True)
        print(f"members seen by node B: {sorted(node_b.presence('lobby'))}", flush=True)
        await ada.publish("lobby", {"text": "hello from node A"})
        message = await bob.recv_message("lobby", timeout=10)
        print(f"bob on node B received from {message['from']}: {message['data']['text']}",
              flush=True)
    finally:
        await ada.close()
        await bob.close()
        await node_a.stop()
        await node_b.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0",
                        help="the Redis both nodes use (default redis://127.0.0.1:6379/0)")
    asyncio.run(main(parser.parse_args().redis))
