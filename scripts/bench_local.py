"""Load on the local stack: N WebSocket clients on one channel, M triggers through apigateway.

Starts ``python -m milequest.local`` on free ports in a child process (so the stack's memory
is its own), connects the clients as pusher-js does (Pusher protocol 7), subscribes them to
one channel,
then triggers M events one after another with the apigateway provider, exactly as an
application would. Reports delivered / lost, delivery latency (p50 / p99), deliveries per
second, how long each trigger call took, the CPU time per delivery of the stack process
(embedded DynamoDB, management API, gateway) and of this one (the provider and the
clients), and the stack process's resident memory.

    .venv/bin/python scripts/bench_local.py [--clients 1000] [--triggers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHANNEL = "bench-public"


def raise_open_files_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_stack(log_path: str) -> tuple[subprocess.Popen[bytes], dict[str, str], str]:
    """The stack in a child process: the process, the variables it exports, its ws URL.

    Its output goes to ``log_path`` (a pipe nobody drains would block the stack's logging).
    """
    args = [sys.executable, "-m", "milequest.local"]
    for name in ("aws", "gateway", "management", "http", "smtp"):
        args += [f"--{name}-port", "0"]  # the stack picks free ports; its banner names them
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    env: dict[str, str] = {}
    gateway_url = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        with open(log_path, encoding="utf-8", errors="replace") as log_text:
            lines = log_text.read().splitlines()
        if any(line.startswith("Press Ctrl-C") for line in lines):
            for line in lines:
                if "WebSocket gateway" in line:
                    gateway_url = line.split()[-1]
                if line.startswith("export "):
                    name, _, value = line[len("export ") :].strip().partition("=")
                    env[name] = value
            break
        time.sleep(0.2)
    if "APIGW_MANAGEMENT_ENDPOINT" not in env or not gateway_url:
        child.kill()
        raise SystemExit(f"the local stack did not start; see {log_path}")
    return child, env, gateway_url


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    received: int = 0
    last_at: float = 0.0


PUSHER_JS_QUERY = "protocol=7&client=js&version=8.6.0&flash=false"


def decoded(raw: str | bytes) -> dict[str, Any]:
    """A Pusher frame with its ``data`` string decoded."""
    frame: dict[str, Any] = json.loads(raw)
    if isinstance(frame.get("data"), str):
        with contextlib.suppress(ValueError):
            frame["data"] = json.loads(frame["data"])
    return frame


async def open_client(url: str, gate: asyncio.Semaphore) -> ClientConnection:
    async with gate:
        ws = await connect(f"{url}?{PUSHER_JS_QUERY}", max_queue=None, open_timeout=60)
        first = decoded(await asyncio.wait_for(ws.recv(), 60))
        if first.get("event") != "pusher:connection_established":
            raise RuntimeError(f"no connection_established: {first}")
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL}}))
        reply = decoded(await asyncio.wait_for(ws.recv(), 60))
        if reply.get("event") != "pusher_internal:subscription_succeeded":
            raise RuntimeError(f"subscription failed: {reply}")
        return ws


async def receive(ws: ClientConnection, tally: Tally) -> None:
    async for raw in ws:
        now = time.time()
        frame = decoded(raw)
        if frame.get("event") == "tick":
            tally.latencies_ms.append((now - frame["data"]["sent_at"]) * 1000)
            tally.received += 1
            tally.last_at = now


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def bench(
    clients: int, triggers: int, env: dict[str, str], url: str, pid: int
) -> dict[str, Any]:
    os.environ.update(env)
    from milequest.services.websocket import create_websocket_service

    rss_idle = rss_mib(pid)
    gate = asyncio.Semaphore(50)
    started = time.perf_counter()
    sockets = await asyncio.gather(*(open_client(url, gate) for _ in range(clients)))
    connect_s = time.perf_counter() - started
    rss_connected = rss_mib(pid)
    tally = Tally()
    readers = [asyncio.create_task(receive(ws, tally)) for ws in sockets]

    service = create_websocket_service()
    expected = clients * triggers
    reported = 0
    call_ms: list[float] = []
    stack_cpu, own_cpu = cpu_seconds(pid), time.process_time()
    first_sent = time.time()
    for i in range(triggers):
        started = time.perf_counter()
        result = await asyncio.to_thread(
            service.trigger, CHANNEL, "tick", {"i": i, "sent_at": time.time()}
        )
        call_ms.append((time.perf_counter() - started) * 1000)
        reported += result.delivered or 0
    # Every post has been answered by now; give the clients a bounded moment to read
    # (what has not arrived by then is reported as lost).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            while tally.received < expected:
                await asyncio.sleep(0.05)
    elapsed = (tally.last_at or time.time()) - first_sent
    stack_cpu, own_cpu = cpu_seconds(pid) - stack_cpu, time.process_time() - own_cpu
    rss_after = rss_mib(pid)
    for ws in sockets:
        await ws.close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return {
        "clients": clients,
        "triggers": triggers,
        "expected": expected,
        "delivered": tally.received,
        "lost": expected - tally.received,
        "reported_by_provider": reported,
        "connect_and_subscribe_s": round(connect_s, 2),
        "p50_ms": round(percentile(tally.latencies_ms, 50), 1),
        "p99_ms": round(percentile(tally.latencies_ms, 99), 1),
        "max_ms": round(max(tally.latencies_ms, default=float("nan")), 1),
        "mean_ms": round(statistics.fmean(tally.latencies_ms), 1) if tally.latencies_ms else None,
        "deliveries_per_s": round(tally.received / elapsed, 1) if elapsed > 0 else None,
        "trigger_call_ms": {
            "p50": round(percentile(call_ms, 50), 1),
            "p99": round(percentile(call_ms, 99), 1),
        },
        "cpu_ms_per_delivery": {
            "stack": round(stack_cpu * 1000 / max(tally.received, 1), 3),
            "provider_and_clients": round(own_cpu * 1000 / max(tally.received, 1), 3),
        },
        "load_average": round(os.getloadavg()[0], 1),
        "stack_rss_mib": {
            "idle": round(rss_idle, 1),
            "connected": round(rss_connected, 1),
            "after_triggers": round(rss_after, 1),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--triggers", type=int, default=100)
    args = parser.parse_args()
    limit = raise_open_files_limit(4 * args.clients + 512)
    log_path = os.path.join(tempfile.gettempdir(), "bench_local_stack.log")
    child, env, url = start_stack(log_path)
    try:
        report = asyncio.run(bench(args.clients, args.triggers, env, url, child.pid))
    finally:
        started = time.perf_counter()
        child.send_signal(signal.SIGINT)
        try:
            code = child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
        stop_s = time.perf_counter() - started
    report["open_files_limit"] = limit
    report["stack_stop_s"] = round(stop_s, 2)
    report["stack_exit_code"] = code
    report["stack_log"] = log_path
    print(json.dumps(report, indent=2))
    return 0 if report["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
