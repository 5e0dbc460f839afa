"""Time from opening a socket to ``pusher:connection_established`` on the local stack.

The stack runs in a child process (``python -m milequest.local``). Each connection goes
through what AWS does: ``$connect`` stores it and invokes the ``announce`` function
asynchronously (Lambda's ``Invoke`` API, served by the stack), which posts the first frame
through the management API once the connection is established. Connections are opened one
after another, so each timing is one handshake alone.

    .venv/bin/python scripts/bench_handshake.py [--connections 200]

It also prints, by design, how many Lambda invocations an idle pusher-js connection costs
per hour in AWS.
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
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local import PUSHER_JS_QUERY, decoded, percentile, start_stack

# By design: pusher-js pings after `activity_timeout` (120 s) of silence and API Gateway's
# MOCK integration answers (no Lambda); API Gateway ends every connection after 2 hours, and
# pusher-js reconnects, which costs $connect + announce + $disconnect.
CONNECTION_LIFETIME_H = 2.0
INVOCATIONS_PER_CONNECTION = 3  # $connect, announce, $disconnect
PINGS_PER_HOUR = 3600 / 120


async def handshakes(url: str, count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        async with connect(f"{url}?{PUSHER_JS_QUERY}", open_timeout=30) as ws:
            frame = decoded(await asyncio.wait_for(ws.recv(), 30))
            timings.append((time.perf_counter() - started) * 1000)
            if frame.get("event") != "pusher:connection_established":
                raise RuntimeError(f"unexpected first frame: {frame}")
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    log_path = os.path.join(tempfile.gettempdir(), "bench_handshake_stack.log")
    child, _, url = start_stack(log_path)
    try:
        asyncio.run(handshakes(url, 5))  # warm the handlers and clients
        timings = asyncio.run(handshakes(url, args.connections))
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
    report: dict[str, Any] = {
        "connections": len(timings),
        "to_connection_established_ms": {
            "p50": round(percentile(timings, 50), 1),
            "p99": round(percentile(timings, 99), 1),
            "max": round(max(timings), 1),
        },
        "idle_connection_per_hour_in_aws": {
            "lambda_invocations": INVOCATIONS_PER_CONNECTION / CONNECTION_LIFETIME_H,
            "pings_answered_without_lambda": PINGS_PER_HOUR,
            "api_gateway_messages": 2 * PINGS_PER_HOUR + 1 / CONNECTION_LIFETIME_H,
        },
        "stack_log": log_path,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
