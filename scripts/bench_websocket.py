"""Benchmark of the apigateway WebSocket provider's fan-out, and of the handlers' cold start.

One ``trigger`` to a channel with N subscribed connections (2,000 by default) through the
apigateway provider, against a local ``@connections`` endpoint (an asyncio HTTP/1.1 server
in its own process, answering after a configurable latency) and DynamoDB from moto (server
mode, its own process). Compared in the same run, at the same concurrency:

  (a) a bare concurrent HTTP client that signs each request with botocore's SigV4 signer
      (urllib3, the same thread count): the floor for a correct client (target >= 0.9x);
  (b) the same bare client, unsigned (target >= 0.8x at 20 and 50 ms);
  (c) the previous provider's way: boto3's ``post_to_connection`` on a 64-thread pool
      (target at 0 ms: the provider >= 2.5x; it measured about 960/s on 2 CPUs);
  (d) a naive sequential ``post_to_connection`` loop.

CPU ms per delivery is this process's CPU time (all threads) over the deliveries.

Then the cold-start cost of importing each handler module in a fresh process, as a ratio
to ``import boto3`` plus creating a client (target <= 1.15).

    .venv/bin/python scripts/bench_websocket.py [--connections 2000] [--concurrency 256]
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
from typing import Any, ClassVar

STAGE = "bench"
PREVIOUS_CONCURRENCY = 64  # the previous provider's thread pool
PREVIOUS = f"previous provider (boto3, {PREVIOUS_CONCURRENCY} threads)"
NAIVE = "naive sequential loop"
QUERY = "(the trigger's Query alone, on moto)"


# -- the local @connections endpoint (runs in a child process) ---------------------------------


class _Endpoint(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 server: 200 to POST /{stage}/@connections/{id}.

    ``GET /stats`` reports the posts, the distinct connections posted to and the time of
    the last post (``time.time()``).
    """

    posts = 0
    latency = 0.0
    last_post_at = 0.0
    seen: ClassVar[set[str]] = set()

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
                stats = {
                    "posts": _Endpoint.posts,
                    "distinct": len(_Endpoint.seen),
                    "last_post_at": _Endpoint.last_post_at,
                }
                body = json.dumps(stats).encode()
                self._respond(body, 0.0)
                continue
            if method == "POST":
                _Endpoint.posts += 1
                _Endpoint.seen.add(path.rsplit("/", 1)[-1])
            self._respond(b"{}", _Endpoint.latency if method == "POST" else 0.0)

    def _respond(self, body: bytes, delay: float) -> None:
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        if delay:
            # Network + service time of a real endpoint, without blocking the loop.
            asyncio.get_running_loop().call_later(delay, self._sent, response)
        else:
            self._sent(response)

    def _sent(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)
            _Endpoint.last_post_at = time.time()


def _serve(port: int, latency_ms: float) -> None:
    _Endpoint.latency = latency_ms / 1000

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Endpoint, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- helpers (bench_fanout_scale.py uses them too) ---------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def endpoint_stats(port: int) -> dict[str, Any]:
    """The endpoint's ``posts``, ``distinct`` connections and ``last_post_at``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        stats: dict[str, Any] = json.loads(response.read())
        return stats


def start_endpoint(latency_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    """The @connections endpoint in a child process; (process, port)."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--latency-ms", str(latency_ms)]
    )
    wait_for(port)
    return child, port


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto in its own process, so that its CPU time is not charged to ours; (process, URL)."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(port)
    return child, f"http://127.0.0.1:{port}"


def stop(*children: subprocess.Popen[bytes]) -> None:
    for child in children:
        child.terminate()
        child.wait()


def connection_ids(n: int) -> list[str]:
    return [f"c{i:06d}AbCdEfGh=" for i in range(n)]


def seed(table: str, moto: str, ids: list[str], channel: str) -> None:
    """Create the table and write the subscription items directly, in the provider's schema."""
    import boto3
    from milequest.services.websocket.apigateway import table_definition

    ddb = boto3.client("dynamodb", endpoint_url=moto)
    ddb.create_table(TableName=table, **table_definition())
    expires = {"N": str(int(time.time()) + 7200)}
    items = [
        {
            "pk": {"S": f"CHAN#{channel}"},
            "sk": {"S": f"CONN#{cid}"},
            "connection_id": {"S": cid},
            "expires_at": expires,
        }
        for cid in ids
    ]

    # One call at a time: moto's DynamoDB loses items under concurrent batch writes.
    for start in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        ddb.batch_write_item(RequestItems={table: batch})


def bench_env() -> None:
    """Credentials and a region for the SDK (moto takes any), and quiet logs."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Best wall time of ``repeat`` runs (the least disturbed), with that run's CPU time."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


# -- fan-out benchmark -------------------------------------------------------------------------


def bench_fanout(
    n: int, concurrency: int, repeat: int, latency_ms: float, naive_max: int
) -> dict[str, tuple[float, float]]:
    """(deliveries per second, CPU ms per delivery) of each way, at ``latency_ms``.

    The ways take turns, ``repeat`` rounds, and each keeps its best round: a machine whose
    load drifts during the run then disturbs every way alike.
    """
    bench_env()
    import boto3
    import urllib3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from milequest.services.websocket import protocol
    from milequest.services.websocket.apigateway import ApiGatewayWebSocketService

    server, port = start_endpoint(latency_ms)
    moto, moto_url = start_moto()
    executor = ThreadPoolExecutor(max_workers=concurrency)
    previous_pool = ThreadPoolExecutor(max_workers=PREVIOUS_CONCURRENCY)
    try:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = moto_url
        table = f"bench-connections-{time.time_ns()}"
        ids = connection_ids(n)
        seed(table, moto_url, ids, "crowd")
        endpoint = f"http://127.0.0.1:{port}/{STAGE}"
        data = {"activityId": "abc123", "distance": 5.2, "note": "x" * 200}
        message = protocol.event("activity-update", "crowd", json.dumps(data)).encode()
        service = ApiGatewayWebSocketService(
            table_name=table,
            management_endpoint=endpoint,
            app_key="k",
            app_secret="s",
            concurrency=concurrency,
        )

        def provider() -> None:
            result = service.trigger("crowd", "activity-update", data)
            assert result.delivered == n, result

        # The fan-out alone (the subscriber Query excluded), as the other ways get the ids.
        work = [(cid, [message]) for cid in ids]
        poster = service._poster()
        paths = [f"/{STAGE}/@connections/{urllib.request.quote(cid, safe='')}" for cid in ids]
        pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=concurrency, block=True)
        credentials = boto3.session.Session().get_credentials()
        assert credentials is not None

        def signed(path: str) -> int:
            request = AWSRequest("POST", f"http://127.0.0.1:{port}{path}", data=message)
            frozen = credentials.get_frozen_credentials()
            SigV4Auth(frozen, "execute-api", "us-east-1").add_auth(request)
            headers = dict(request.headers.items())
            return int(pool.urlopen("POST", path, body=message, headers=headers).status)

        def unsigned(path: str) -> int:
            return int(pool.urlopen("POST", path, body=message).status)

        boto3_client = boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=endpoint,
            config=Config(
                retries={"mode": "standard"},
                max_pool_connections=PREVIOUS_CONCURRENCY,
                parameter_validation=False,
            ),
        )

        def post(cid: str) -> Any:
            return boto3_client.post_to_connection(ConnectionId=cid, Data=message)

        ways: dict[str, tuple[Callable[[], Any], int]] = {
            "provider trigger": (provider, n),
            "provider fan-out": (lambda: poster.post_many(work), n),
            "bare signed client": (lambda: list(executor.map(signed, paths)), n),
            "bare unsigned client": (lambda: list(executor.map(unsigned, paths)), n),
            PREVIOUS: (lambda: list(previous_pool.map(post, ids)), n),
        }
        best: dict[str, tuple[float, float]] = {}
        for fn, _ in ways.values():
            fn()  # warm-up: clients, pools and threads
        for _ in range(repeat):
            for name, (fn, count) in ways.items():
                before = endpoint_stats(port)["posts"]
                run = _timed(fn, 1)
                assert endpoint_stats(port)["posts"] - before == count, name
                best[name] = min(best.get(name, run), run)
        out = {
            name: (ways[name][1] / wall, cpu * 1000 / ways[name][1])
            for name, (wall, cpu) in best.items()
        }
        # What the trigger spends in the subscriptions Query (moto answers slowly: its
        # response serializer costs about half a millisecond per item).
        wall, cpu = _timed(lambda: list(service._channel_connections("crowd", None).ids), repeat)
        out[QUERY] = (n / wall, cpu * 1000 / n)
        # A sequential loop's rate does not depend on how many it sends; with a slow
        # endpoint only the first ``naive_max`` connections are timed.
        naive_ids = ids[: min(n, naive_max)]
        wall, cpu = _timed(lambda: [post(cid) for cid in naive_ids], 1)
        out[NAIVE] = (len(naive_ids) / wall, cpu * 1000 / len(naive_ids))
        service.close()
    finally:
        executor.shutdown()
        previous_pool.shutdown()
        stop(moto, server)
    return out


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
    # Beyond the import: what the first invocation adds (service, settings, the boto3
    # clients and the signed delivery path).
    out["first_call_s"] = _cold(
        "import milequest.handlers.websocket as h\ns = h._service()\ns._clients()\ns._poster()",
        runs,
        _LAMBDA_ENV,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=256)
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
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.latency_ms[0] if args.latency_ms else 0.0)
        return

    bench_env()  # credentials and a region, as a function has them
    n, conc = args.connections, args.concurrency
    print(
        f"fan-out: 1 trigger -> {n} connections, concurrency {conc} "
        f"(previous provider: {PREVIOUS_CONCURRENCY}), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for latency in args.latency_ms:
        fan = bench_fanout(n, conc, args.repeat, latency, args.naive_max)
        print(f"  endpoint latency {latency:g} ms")
        for name, (per_s, cpu_ms) in fan.items():
            unit = "items/s     " if name == QUERY else "deliveries/s"
            print(f"    {name:40s} {per_s:8.0f} {unit}  {cpu_ms:6.3f} CPU ms/item")
        targets = [
            ("bare signed client", 0.9),
            ("bare unsigned client", 0.8 if latency else None),
            (PREVIOUS, 2.5 if not latency else None),
            (NAIVE, None),
        ]
        for way in ("provider trigger", "provider fan-out"):
            print(f"    {way} / ...")
            for name, target in targets:
                goal = f" (target >= {target})" if target else ""
                print(f"      {name:38s} {fan[way][0] / fan[name][0]:5.2f}x{goal}")
            if not latency:
                print(f"      {'960/s (its figure before)':38s} {fan[way][0] / 960:5.2f}x")
    if args.skip_cold_start:
        return
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
