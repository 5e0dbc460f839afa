#!/usr/bin/env python3
"""Email service benchmarks (a script, not a timed test). Prints:

(a) SendBulkEmail calls for 10,000 recipients (same content): must be 200;
(b) cold start, in fresh processes: ``import milequest.services.email`` plus
    ``create_email_service("ses")`` against ``import boto3`` plus ``boto3.client("sesv2")``
    (medians; target ratio <= 1.15);
(c) peak traced memory (tracemalloc) of streaming 10,000 vs 100,000 messages through
    ``iter_bulk_emails`` (flat), and of ``send_bulk_emails``, which also keeps one result
    per message.

Everything runs offline: the SES provider talks to a local HTTP endpoint speaking the SES
v2 wire protocol (the one the test suite uses) through ``AWS_ENDPOINT_URL_SESV2``.

    .venv/bin/python scripts/bench_email.py [--runs 15] [--skip-memory]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE = """
import time
t = time.perf_counter()
import boto3
boto3.client("sesv2", region_name="us-east-1")
print(time.perf_counter() - t)
"""
FLOOR = """
import time
t = time.perf_counter()
import boto3
boto3.client("sesv2", region_name="us-east-1")
import pydantic_settings
print(time.perf_counter() - t)
"""
OURS = """
import time
t = time.perf_counter()
import milequest.services.email as email
email.create_email_service("ses", aws_ses_region="us-east-1")
print(time.perf_counter() - t)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        DEFAULT_FROM_EMAIL="noreply@milequest.example",
    )
    for name in list(env):
        if name.startswith(("EMAIL_", "SES_", "SMTP_")):
            del env[name]
    return env


def _child(code: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env()
    )
    return float(out.stdout.strip().splitlines()[-1])


def cold_start(runs: int) -> None:
    base: list[float] = []
    floor: list[float] = []
    ours: list[float] = []
    for _ in range(2):  # warm the OS file cache for every variant
        _child(BASELINE)
        _child(FLOOR)
        _child(OURS)
    for _ in range(runs):  # interleaved, so drift hits every variant alike
        base.append(_child(BASELINE))
        floor.append(_child(FLOOR))
        ours.append(_child(OURS))
    b, f, o = statistics.median(base), statistics.median(floor), statistics.median(ours)
    print(f"(b) cold start, median of {runs} fresh processes each:")
    print(f"    import boto3 + boto3.client('sesv2')                    {b * 1000:7.1f} ms")
    print(f"    import milequest.services.email + create_email_service  {o * 1000:7.1f} ms")
    print(f"    ratio {o / b:.2f} (target <= 1.15)")
    print(f"    for reference, baseline + import pydantic_settings       {f * 1000:7.1f} ms")
    print(f"    (ratio {f / b:.2f}: the floor set by reading settings with pydantic-settings)")


def _messages(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {"to": f"walker{i}@example.com", "subject": "Weekly summary", "text": "Walk on!"}


def bulk_calls(service: Any, server: Any) -> None:
    before = server.state.count("POST", "/v2/email/outbound-bulk-emails")
    result = service.send_bulk_emails(_messages(10_000))
    calls = server.state.count("POST", "/v2/email/outbound-bulk-emails") - before
    verdict = "OK" if calls == 200 and result.succeeded == 10_000 else "FAIL"
    sent = result.succeeded
    print(f"(a) 10,000 recipients: {calls} SendBulkEmail calls, {sent} sent [{verdict}]")


def _peak(fn: Any) -> tuple[float, float]:
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6, elapsed


def memory(service: Any) -> None:
    print("(c) peak traced memory (tracemalloc):")
    for count in (10_000, 100_000):

        def stream(n: int = count) -> None:
            ok = sum(1 for item in service.iter_bulk_emails(_messages(n)) if item.ok)
            assert ok == n, ok

        peak, elapsed = _peak(stream)
        print(f"    iter_bulk_emails {count:>7,} messages: peak {peak:7.1f} MB ({elapsed:.1f} s)")
    for count in (10_000, 100_000):

        def collect(n: int = count) -> None:
            assert service.send_bulk_emails(_messages(n)).succeeded == n

        peak, elapsed = _peak(collect)
        print(f"    send_bulk_emails {count:>7,} messages: peak {peak:7.1f} MB ({elapsed:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per variant")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    os.environ.update(_env())
    for name in list(os.environ):
        if name.startswith(("EMAIL_", "SES_", "SMTP_")):
            del os.environ[name]
    from milequest.services.email import create_email_service

    from tests.runtime.email.ses_server import SesServer

    server = SesServer().start()
    try:
        server.state.verify("milequest.example")
        server.state.record_sends = False  # the endpoint keeps counts only
        server.state.max_send_rate = 1e9  # measure the client, not the account's quota
        os.environ["AWS_ENDPOINT_URL_SESV2"] = server.url
        service = create_email_service("ses")
        bulk_calls(service, server)
        cold_start(args.runs)
        if not args.skip_memory:
            memory(service)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
