"""Pusher's HTTP API on the local stack: ``POST /events`` to a channel with one subscriber.

Starts the stack in a child process and subscribes one Pusher-protocol client to a channel.
Then, in the same run, it sends the same number of events two ways and waits for each to
arrive:
- through the HTTP API, with Pusher's official Python SDK (``pusher.Pusher.trigger``, one
  signed HTTP request per event, from ``--threads`` threads);
- in-process, with ``create_websocket_service().trigger`` (the apigateway provider).

    .venv/bin/python scripts/bench_pusher_api.py [--events 1000] [--threads 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local import PUSHER_JS_QUERY, decoded, percentile, start_stack

CHANNEL = "bench-api"


def timed(send: Callable[[int], Any], count: int, threads: int) -> tuple[float, list[float]]:
    """Call ``send(i)`` ``count`` times from ``threads`` threads; elapsed s, latencies ms."""

    def one(i: int) -> float:
        started = time.perf_counter()
        send(i)
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        latencies = list(pool.map(one, range(count)))
    return time.perf_counter() - started, latencies


async def run(
    env: dict[str, str], url: str, http: str, events: int, threads: int
) -> dict[str, Any]:
    os.environ.update(env)
    import pusher
    from milequest.services.websocket import create_websocket_service

    host, port = http.removeprefix("http://").rsplit(":", 1)
    sdk = pusher.Pusher(
        app_id=env["WEBSOCKET_APP_ID"],
        key=env["WEBSOCKET_APP_KEY"],
        secret=env["WEBSOCKET_APP_SECRET"],
        host=host,
        port=int(port),
        ssl=False,
    )
    service = create_websocket_service()
    async with connect(f"{url}?{PUSHER_JS_QUERY}", max_queue=None) as ws:
        await ws.recv()  # pusher:connection_established
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL}}))
        await ws.recv()  # pusher_internal:subscription_succeeded
        received: dict[str, int] = {"api": 0, "in-process": 0}

        async def read() -> None:
            async for raw in ws:
                frame = decoded(raw)
                if frame.get("event") in received:
                    received[frame["event"]] += 1

        reader = asyncio.create_task(read())
        report: dict[str, Any] = {"events": events, "threads": threads}
        ways: dict[str, Callable[[int], Any]] = {
            "api": lambda i: sdk.trigger(CHANNEL, "api", {"i": i}),
            "in-process": lambda i: service.trigger(CHANNEL, "in-process", {"i": i}),
        }
        for name, send in ways.items():
            send(-1)  # warm up (clients, connections)
            received[name] -= 1
            elapsed, latencies = await asyncio.to_thread(timed, send, events, threads)
            async with asyncio.timeout(60):
                while received[name] < events:
                    await asyncio.sleep(0.01)
            report[name] = {
                "requests_per_s": round(events / elapsed, 1),
                "p50_ms": round(percentile(latencies, 50), 2),
                "p99_ms": round(percentile(latencies, 99), 2),
                "delivered": received[name],
            }
        reader.cancel()
    report["api_vs_in_process"] = round(
        report["api"]["requests_per_s"] / report["in-process"]["requests_per_s"], 2
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    log_path = os.path.join(tempfile.gettempdir(), "bench_pusher_api_stack.log")
    child, env, url = start_stack(log_path)
    with open(log_path, encoding="utf-8") as log:
        http = next(line.split()[-1] for line in log if "HTTP app" in line)
    try:
        report = asyncio.run(run(env, url, http, args.events, args.threads))
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
