#!/usr/bin/env python3
"""The email queue, measured (a script, not a test).

Enqueues N messages (default 10,000) in queue mode on moto's SQS, then drains them with 1, 2
and 4 consumer workers against the local SES v2 endpoint enforcing a send rate (default
50/s, answered 429 above it, and reported to the consumers as ``MaxSendRate`` by
``GetAccount``). Each worker is a process of its own, like one Lambda instance (its own
consumer, circuit breaker and pacer; ``EMAIL_QUEUE_CONCURRENCY`` = the worker count), and
moto runs in processes of its own too, so that no interpreter lock is shared.

For each run: the enqueue rate; the drain time (worker start-up included) and the sending
rate (SES's first acceptance to its last); the peak rate SES observed in any one-second
window, which must never exceed the limit; the 429s; the duplicates (sends per id beyond
the first: 0 without crashes); the losses (ids neither sent nor dead-lettered: 0). Every
message costs the consumer three calls (two idempotency writes and the send), so on a small
machine moto, not the rate, may bound the throughput: the script says which.

    .venv/bin/python scripts/bench_email_queue.py [--messages 10000] [--rate 50] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _env(sqs: str, tables: str, ses: str) -> None:
    for name in list(os.environ):
        if name.startswith(("EMAIL_", "SES_", "SMTP_", "RESEND_", "SENDGRID_", "AWS_ENDPOINT")):
            del os.environ[name]
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL_SQS=sqs,
        AWS_ENDPOINT_URL_DYNAMODB=tables,
        AWS_ENDPOINT_URL_S3=tables,
        AWS_ENDPOINT_URL_SESV2=ses,
        DEFAULT_FROM_EMAIL="noreply@milequest.example",
        EMAIL_PROVIDER="ses",
        METRICS_SINK="none",
    )


# One Lambda instance: one consumer polling batches of 10 until it is told to stop.
_WORKER = """
import json, os, signal
from milequest.local.email_queue import EmailQueueResources, LocalEmailQueue
resources = EmailQueueResources(**json.loads(os.environ["BENCH_RESOURCES"]))
options = {"region_name": "us-east-1"}
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
worker = LocalEmailQueue(resources, options, workers=1, wait_seconds=1).start()
signal.sigwait([signal.SIGTERM])
worker.stop()
"""


def _run(ses: Any, messages: int, rate: float, workers: int, n: int) -> dict[str, Any]:
    from milequest.local.email_queue import LocalEmailQueue, create_email_queue_resources
    from milequest.services.email import create_email_service
    from milequest.services.email.queue import ID_TAG

    options = {"region_name": "us-east-1"}  # the endpoints come from the environment
    resources = create_email_queue_resources(
        options, name=f"bench-{n}", bucket=f"bench-claims-{n}", table=f"bench-idempotency-{n}"
    )
    os.environ.update(resources.environment(workers))
    ses.reset()
    ses.state.verify("milequest.example")
    ses.state.max_send_rate = rate
    ses.state.rate_limit = rate

    producer = create_email_service()
    started = time.perf_counter()
    result = producer.send_bulk_emails(
        {"to": f"walker{i}@example.com", "subject": "Your week", "text": f"{i} miles"}
        for i in range(messages)
    )
    enqueue_s = time.perf_counter() - started
    queued = {r.message_id for r in result.results if r.ok}

    queue = LocalEmailQueue(resources, options, workers=0)  # its state; workers run apart
    worker_env = {**os.environ, "BENCH_RESOURCES": json.dumps(vars(resources))}
    started = time.perf_counter()
    children = [
        subprocess.Popen([sys.executable, "-c", _WORKER], env=worker_env, cwd=ROOT)
        for _ in range(workers)
    ]
    try:
        while True:
            time.sleep(0.5)
            with ses.state.lock:
                sent = len(ses.state.sent)
            state = queue.state() if sent >= len(queued) else None
            if state is not None and state["queued"] == 0 and state["in_flight"] == 0:
                break
            if any(child.poll() is not None for child in children):
                raise RuntimeError("a worker exited")
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait()
    drain_s = time.perf_counter() - started

    ids = Counter(
        tag["Value"]
        for item in ses.state.sent
        for tag in item.get("EmailTags", [])
        if tag["Name"] == ID_TAG
    )
    dead = {d["milequest_id"] for d in queue.state()["dead_letters"]}
    with ses.state.lock:
        accepted = sorted(ses.state.accepted_at)
    sending_s = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    return {
        "workers": workers,
        "messages": messages,
        "queued": len(queued),
        "enqueue_per_s": round(len(queued) / enqueue_s, 1),
        "drain_s": round(drain_s, 1),
        # From SES's first acceptance to its last: the workers' start-up left out.
        "sent_per_s": round((len(accepted) - 1) / sending_s, 1) if sending_s else 0.0,
        "peak_per_s": ses.state.peak_rate(),
        # The consumers pace at 95 % of the rate; well below that, something else bounds.
        "bound_by": "the rate"
        if sending_s and (len(accepted) - 1) / sending_s >= 0.85 * rate
        else "local capacity (moto, CPU)",
        "limit_per_s": rate,
        "throttled_429": ses.state.throttled,
        "duplicates": sum(count - 1 for count in ids.values()),
        "losses": len(queued - set(ids) - dead),
        "dead_lettered": len(dead),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=50.0, help="SES's send rate (per second)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()

    from tests.conftest import free_port
    from tests.runtime.email.ses_server import SesServer

    # SQS in one moto process, DynamoDB and S3 in another: moto is the costly part here.
    ports = [free_port(), free_port()]
    motos = [
        subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    ses = SesServer().start()
    runs = []
    try:
        for url in urls:
            _wait_for(url)
        _env(urls[0], urls[1], ses.url)
        for n, workers in enumerate(args.workers):
            report = _run(ses, args.messages, args.rate, workers, n)
            runs.append(report)
            print(json.dumps(report) if args.json else _line(report), flush=True)
    finally:
        ses.stop()
        for process in motos:
            process.terminate()
            process.wait()
    ok = all(
        r["peak_per_s"] <= r["limit_per_s"] and r["duplicates"] == 0 and r["losses"] == 0
        for r in runs
    )
    return 0 if ok else 1


def _wait_for(url: str, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['workers']} worker(s): {r['queued']} queued at {r['enqueue_per_s']}/s; drained in "
        f"{r['drain_s']} s (start-up included), sending at {r['sent_per_s']}/s; peak "
        f"{r['peak_per_s']}/s "
        f"(limit {r['limit_per_s']:g}/s), 429s {r['throttled_429']}, duplicates "
        f"{r['duplicates']}, losses {r['losses']}, dead-lettered {r['dead_lettered']}; "
        f"bound by {r['bound_by']}"
    )


if __name__ == "__main__":
    sys.exit(main())
