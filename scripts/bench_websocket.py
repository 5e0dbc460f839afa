"""Benchmark of the apigateway WebSocket provider's fan-out, and of the handlers' cold start.

One ``trigger`` to a channel with N subscribed connections (2,000 by default) through the
apigateway provider, against a local ``@connections`` endpoint (an asyncio HTTP/1.1 server
in its own process, so that it is not the bottleneck) and DynamoDB from moto (server
mode). Compared in the same run with:

  (a) a naive sequential ``post_to_connection`` loop (target: provider >= 10x), and
  (b) a bare concurrent HTTP client (urllib3, the same thread count, no AWS SDK) against
      the same endpoint (target: provider >= 0.8x).

Then the cold-start cost of importing each handler module in a fresh process, as a ratio
to ``import boto3`` plus creating a client (target <= 1.15).

    .venv/bin/python scripts/bench_websocket.py [--connections 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

STAGE = "bench"


# -- the local @connections endpoint (runs in a child process) ---------------------------------


class _Endpoint(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 server: 200 to POST /{stage}/@connections/{id}."""

    posts = 0
    latency = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            method, path = head.split(" ", 2)[:2]
            if method == "GET" and path == "/stats":
                body = json.dumps({"posts": _Endpoint.posts}).encode()
            else:
                _Endpoint.posts += 1
                body = b"{}"
            response = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            if _Endpoint.latency and method == "POST":
                # Network + service time of a real endpoint, without blocking the loop.
                asyncio.get_running_loop().call_later(
                    _Endpoint.latency, self.transport.write, response
                )
            else:
                self.transport.write(response)


def _serve(port: int, latency_ms: float) -> None:
    _Endpoint.latency = latency_ms / 1000

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Endpoint, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- helpers -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int) -> None:
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _posts(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return int(json.loads(response.read())["posts"])


def _seed(table: str, moto: str, ids: list[str], channel: str) -> None:
    """Write the subscription items directly (BatchWriteItem), in the provider's schema."""
    import boto3
    from milequest.services.websocket.apigateway import table_definition

    ddb = boto3.client("dynamodb", endpoint_url=moto)
    ddb.create_table(TableName=table, **table_definition())
    expires = {"N": str(int(time.time()) + 7200)}
    items: list[dict[str, Any]] = []
    for cid in ids:
        common = {"connection_id": {"S": cid}, "expires_at": expires}
        items.append({"pk": {"S": f"CONN#{cid}"}, "sk": {"S": "META"}, **common})
        items.append({"pk": {"S": f"CHAN#{channel}"}, "sk": {"S": f"CONN#{cid}"}, **common})
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        ddb.batch_write_item(RequestItems={table: batch})


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    """Best wall time of ``repeat`` runs (the least disturbed by the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# -- fan-out benchmark -------------------------------------------------------------------------


def bench_fanout(
    n: int, concurrency: int, repeat: int, latency_ms: float, naive_max: int
) -> dict[str, float]:
    """Deliveries per second of the three ways, against an endpoint with ``latency_ms``."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import boto3
    import urllib3
    from botocore.config import Config
    from milequest.services.websocket.apigateway import ApiGatewayWebSocketService, frame

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--latency-ms", str(latency_ms)]
    )
    # moto in its own process, so that its CPU time is not charged to the fan-out's GIL.
    moto_port = _free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port)
        _wait_for(moto_port)
        moto_url = f"http://127.0.0.1:{moto_port}"
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = moto_url
        table = f"bench-connections-{time.time_ns()}"
        ids = [f"c{i:05d}AbCdEfGh=" for i in range(n)]
        _seed(table, moto_url, ids, "crowd")
        endpoint = f"http://127.0.0.1:{port}/{STAGE}"
        data = {"activityId": "abc123", "distance": 5.2, "note": "x" * 200}

        service = ApiGatewayWebSocketService(
            table_name=table,
            management_endpoint=endpoint,
            app_key="k",
            app_secret="s",
            concurrency=concurrency,
        )
        service.trigger("crowd", "warm-up", data)  # clients, pools and threads
        before = _posts(port)
        results = []

        def provider() -> None:
            results.append(service.trigger("crowd", "activity-update", data))

        t_provider = _timed(provider, repeat)
        delivered = _posts(port) - before
        assert all(r.delivered == n for r in results), results
        assert delivered == n * repeat, (delivered, n * repeat)
        # The fan-out alone (the subscriber Query excluded), as the loops below get the ids.
        message = frame("activity-update", "crowd", data)
        targets = [(cid, message) for cid in service._subscribers("crowd")]
        t_fanout = _timed(lambda: service._fanout(targets), repeat)

        naive_client = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=endpoint,
            config=Config(retries={"mode": "standard"}),
        )
        # A sequential loop's rate does not depend on how many it sends; with a slow
        # endpoint only the first ``naive_max`` connections are timed.
        naive_ids = ids[: min(n, naive_max)]

        def naive() -> None:
            for cid in naive_ids:
                naive_client.post_to_connection(ConnectionId=cid, Data=message)

        naive_client.post_to_connection(ConnectionId=ids[0], Data=message)  # warm-up
        t_naive = _timed(naive, 1)

        pool = urllib3.PoolManager(maxsize=concurrency, block=True)
        executor = ThreadPoolExecutor(max_workers=concurrency)
        urls = [f"{endpoint}/@connections/{urllib.request.quote(cid, safe='')}" for cid in ids]

        def post(url: str) -> int:
            return int(pool.request("POST", url, body=message).status)

        def bare() -> None:
            statuses = list(executor.map(post, urls))
            assert statuses.count(200) == n

        bare()  # warm-up
        t_bare = _timed(bare, repeat)
        executor.shutdown()
        service.close()
    finally:
        for child in (moto, server):
            child.terminate()
            child.wait()
    return {
        "provider_per_s": n / t_provider,
        "fanout_per_s": n / t_fanout,
        "naive_per_s": len(naive_ids) / t_naive,
        "bare_per_s": n / t_bare,
    }


# -- cold start --------------------------------------------------------------------------------

_CHILD = """
import time
{setup}
start = time.perf_counter()
{code}
print(time.perf_counter() - start)
"""

# What a deployed WebSocket function has in its environment.
_LAMBDA_ENV = (
    "import os\n"
    "os.environ.update(WEBSOCKET_PROVIDER='apigateway', CONNECTIONS_TABLE='t',"
    " APIGW_MANAGEMENT_ENDPOINT='https://abc.execute-api.us-east-1.amazonaws.com/prod',"
    " WEBSOCKET_APP_KEY='k', WEBSOCKET_APP_SECRET='s')"
)


def _cold(code: str, runs: int, setup: str = "") -> float:
    """Median in-process time of ``code`` in fresh interpreters."""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD.format(setup=setup, code=code)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def bench_cold_start(modules: list[str], runs: int) -> dict[str, float]:
    baseline = _cold(
        "import boto3\nboto3.client('apigatewaymanagementapi', "
        "endpoint_url='https://abc.execute-api.us-east-1.amazonaws.com/prod')",
        runs,
    )
    out = {"baseline_s": baseline}
    for module in modules:
        out[module] = _cold(f"import {module}", runs)
    # Beyond the import: what the first invocation adds (service, settings, both clients).
    out["first_call_s"] = _cold(
        "import milequest.handlers.websocket as h\nh._service()._clients()", runs, _LAMBDA_ENV
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="*",
        default=[0.0, 20.0, 50.0],
        help="endpoint response delays to run (0 = as fast as loopback allows)",
    )
    parser.add_argument("--naive-max", type=int, default=300)
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--handlers", nargs="*", default=["milequest.handlers.websocket"])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.latency_ms[0] if args.latency_ms else 0.0)
        return

    n, conc = args.connections, args.concurrency
    print(f"fan-out: 1 trigger -> {n} connections, concurrency {conc}, {os.cpu_count()} CPUs")
    for latency in args.latency_ms:
        fan = bench_fanout(n, conc, args.repeat, latency, args.naive_max)
        vs_naive = fan["provider_per_s"] / fan["naive_per_s"]
        vs_bare = fan["provider_per_s"] / fan["bare_per_s"]
        print(f"  endpoint latency {latency:g} ms")
        print(f"    provider trigger      {fan['provider_per_s']:8.0f} deliveries/s")
        print(f"    provider fan-out only {fan['fanout_per_s']:8.0f} deliveries/s")
        print(f"    naive sequential loop {fan['naive_per_s']:8.0f} deliveries/s")
        print(f"    bare concurrent HTTP  {fan['bare_per_s']:8.0f} deliveries/s")
        print(f"    provider / naive = {vs_naive:5.1f}x (target >= 10)")
        print(f"    provider / bare  = {vs_bare:5.2f}x (target >= 0.8)")

    cold = bench_cold_start(args.handlers, args.cold_runs)
    print(f"cold start (median of {args.cold_runs} fresh processes, in-process time)")
    print(f"  import boto3 + client  {cold['baseline_s'] * 1000:7.1f} ms")
    for module in args.handlers:
        ratio = cold[module] / cold["baseline_s"]
        ms = cold[module] * 1000
        print(f"  import {module}: {ms:.1f} ms, ratio {ratio:.2f} (target <= 1.15)")
    first = cold["first_call_s"]
    print(
        f"  import + first use of the service and its two clients: {first * 1000:.1f} ms, "
        f"ratio {first / cold['baseline_s']:.2f}"
    )


if __name__ == "__main__":
    main()
