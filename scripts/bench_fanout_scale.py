"""Scale benchmark of the sharded fan-out: 100,000 subscribers, 1, 2, 4 and 8 worker processes.

The shard jobs of one event to a channel of N subscribers go to an SQS queue (moto, server
mode, its own process) exactly as ``trigger`` queues them (``shard_jobs`` and
``ShardQueue``, the code after the subscriptions Query). Then W worker processes, each one
Lambda instance's worth (``milequest.handlers.fanout`` fed by ``FanoutConsumer`` with one
batch in flight), are released at once and deliver to a local ``@connections`` endpoint
(asyncio, its own process) that answers after about 20 ms. Reported per W: the time from
the release to the last delivery, deliveries per second, the speed-up against one worker,
whether every connection got the event exactly once, and the CPU seconds each process
used (workers, endpoint, moto), which explain the curve.

``--trigger`` also seeds the subscriptions in DynamoDB and queues the shards through the
provider's ``trigger``; moto answers such a Query far slower than DynamoDB does, so that
time is reported apart.

    .venv/bin/python scripts/bench_fanout_scale.py [--subscribers 100000] [--workers 1 2 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_websocket import (
    STAGE,
    bench_env,
    connection_ids,
    endpoint_stats,
    seed,
    start_endpoint,
    start_moto,
    stop,
)

CHANNEL = "stadium"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one worker process ------------------------------------------------------------------------


def worker(batch_size: int) -> None:
    """A fan-out worker: wait for "go" on stdin, then consume the queue until killed."""
    bench_env()
    import boto3
    from milequest.local.fanout import FanoutConsumer, FanoutQueues
    from milequest.services import register_service
    from milequest.services.websocket import create_websocket_service

    service = create_websocket_service("apigateway")
    register_service("websocket", service)
    service._poster()  # type: ignore[attr-defined]  # warm, as a Lambda instance is
    sqs = boto3.client("sqs")
    queues = FanoutQueues(*json.loads(os.environ["BENCH_QUEUES"]))
    consumer = FanoutConsumer(sqs, queues, workers=1, batch_size=batch_size, wait_seconds=1)
    print("ready", flush=True)
    sys.stdin.readline()
    consumer.start()
    while True:
        time.sleep(3600)


# -- the benchmark -----------------------------------------------------------------------------


def queue_shards(args: argparse.Namespace, env: dict[str, str], queue_url: str) -> dict[str, Any]:
    """Put one event's shards on the queue; how long it took and what was queued."""
    import boto3
    from milequest.services.websocket import create_websocket_service, protocol
    from milequest.services.websocket.delivery import ShardQueue, shard_jobs

    started = time.perf_counter()
    if args.trigger:
        service = create_websocket_service(
            "apigateway",
            connections_table=env["CONNECTIONS_TABLE"],
            apigw_management_endpoint=env["APIGW_MANAGEMENT_ENDPOINT"],
            websocket_app_key="k",
            websocket_app_secret="s",
            websocket_fanout_queue_url=queue_url,
            websocket_fanout_shard_size=args.shard_size,
        )
        result = service.trigger(CHANNEL, "goal", {"minute": 90})
        shards, queued = result.shards, result.queued
    else:
        sqs = boto3.client("sqs")
        frame = protocol.event("goal", CHANNEL, json.dumps({"minute": 90}))
        jobs = shard_jobs(CHANNEL, [frame], connection_ids(args.subscribers), args.shard_size)
        shards, queued = ShardQueue(lambda: sqs, queue_url).send(jobs)
    return {"queue_s": time.perf_counter() - started, "shards": shards, "queued": queued}


def run(args: argparse.Namespace, workers: int, moto: str, table: str) -> dict[str, Any]:
    import boto3
    from milequest.local.fanout import create_fanout_queues

    endpoint, port = start_endpoint(args.latency_ms)
    sqs = boto3.client("sqs")
    queues = create_fanout_queues(sqs, name=f"scale-{workers}-{time.time_ns()}")
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto,
        "WEBSOCKET_PROVIDER": "apigateway",
        "CONNECTIONS_TABLE": table,
        "APIGW_MANAGEMENT_ENDPOINT": f"http://127.0.0.1:{port}/{STAGE}",
        "WEBSOCKET_APP_KEY": "k",
        "WEBSOCKET_APP_SECRET": "s",
        "WEBSOCKET_FANOUT_QUEUE_URL": queues.queue_url,
        "WEBSOCKET_FANOUT_SHARD_SIZE": str(args.shard_size),
        "BENCH_QUEUES": json.dumps(
            [queues.queue_url, queues.queue_arn, queues.dead_letter_queue_url]
        ),
    }
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--batch-size", str(args.batch_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(workers)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not start")
            # Its log lines from now on: read, so that a full pipe never blocks it.
            threading.Thread(target=child.stdout.read, daemon=True).start()
        queued = queue_shards(args, env, queues.queue_url)
        cpu_before = {child.pid: cpu_seconds(child.pid) for child in children}
        side = {"endpoint": endpoint.pid}
        side_before = {name: cpu_seconds(pid) for name, pid in side.items()}
        released = time.time()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        deadline = time.monotonic() + args.timeout
        stats = endpoint_stats(port)
        while stats["distinct"] < queued["queued"] and time.monotonic() < deadline:
            time.sleep(0.2)
            stats = endpoint_stats(port)
        worker_cpu = sum(cpu_seconds(c.pid) - cpu_before[c.pid] for c in children)
        side_cpu = {name: cpu_seconds(pid) - side_before[name] for name, pid in side.items()}
    finally:
        for child in children:
            child.kill()
            child.wait()
        stop(endpoint)
    elapsed = stats["last_post_at"] - released
    return {
        **queued,
        "workers": workers,
        "last_delivery_s": elapsed,
        "deliveries_per_s": stats["posts"] / elapsed if elapsed > 0 else 0.0,
        "posts": stats["posts"],
        "distinct": stats["distinct"],
        "worker_cpu_s": worker_cpu,
        "endpoint_cpu_s": side_cpu["endpoint"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4, 8])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=1, help="shards per worker batch")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--trigger", action="store_true", help="queue through trigger()")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.batch_size)
        return
    bench_env()
    moto_process, moto = start_moto()
    os.environ["AWS_ENDPOINT_URL"] = moto
    table = f"scale-{time.time_ns()}"
    try:
        if args.trigger:
            seed(table, moto, connection_ids(args.subscribers), CHANNEL)
        print(
            f"{args.subscribers} subscribers, shards of {args.shard_size}, batch size "
            f"{args.batch_size}, endpoint latency {args.latency_ms:g} ms, {os.cpu_count()} "
            f"CPUs, load average {os.getloadavg()[0]:.1f}; each worker: one process, "
            "one batch in flight, the provider's default concurrency"
        )
        base = None
        for workers in args.workers:
            moto_cpu = cpu_seconds(moto_process.pid)
            result = run(args, workers, moto, table)
            moto_cpu = cpu_seconds(moto_process.pid) - moto_cpu
            base = base or result["last_delivery_s"]
            duplicates = result["posts"] - result["distinct"]
            missing = result["queued"] - result["distinct"]
            print(
                f"  {workers} worker(s): shards queued in {result['queue_s']:.1f} s "
                f"({result['shards']} shards); last delivery after "
                f"{result['last_delivery_s']:.1f} s, {result['deliveries_per_s']:.0f}/s, "
                f"speed-up {base / result['last_delivery_s']:.2f}x; missing {missing}, "
                f"duplicates {duplicates}; "
                f"CPU s: workers {result['worker_cpu_s']:.1f}, endpoint "
                f"{result['endpoint_cpu_s']:.1f}, moto {moto_cpu:.1f}",
                flush=True,
            )
    finally:
        stop(moto_process)


if __name__ == "__main__":
    main()
