#!/usr/bin/env python3
"""The shared suppression list and the signed webhooks, measured (a script, not a test).

(a) DynamoDB calls the pre-send check makes: per single send, and for 10,000 bulk messages
    (one BatchGetItem per provider call of 50, whatever the list holds);
(b) sends per second through the mock provider with the list in memory and in DynamoDB
    (moto in this process: it shows our overhead, not DynamoDB's latency);
(c) the cost of verifying one webhook: SNS (RSA, certificate cached), Resend (Svix HMAC),
    SendGrid (ECDSA P-256).

    .venv/bin/python scripts/bench_email_suppression.py [--messages 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE = "bench-email-suppression"


def _env() -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        DEFAULT_FROM_EMAIL="noreply@milequest.example",
        METRICS_SINK="none",
    )
    for name in list(os.environ):
        if name.startswith(("EMAIL_", "SES_", "SMTP_", "RESEND_", "SENDGRID_")):
            del os.environ[name]


def _rate(fn: Callable[[], Any], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return count / (time.perf_counter() - start)


def _per_call_us(fn: Callable[[], Any], count: int) -> float:
    fn()  # warm (the SNS certificate is fetched once)
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count * 1e6


def lookups(messages: int) -> None:
    import boto3
    from milequest.services.email import create_email_service
    from milequest.services.email.suppression_dynamodb import table_definition
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(TableName=TABLE, **table_definition())
        calls: list[str] = []
        service = create_email_service("mock", email_suppression_table=TABLE)
        store = service.suppression
        store.client.meta.events.register(  # type: ignore[attr-defined]
            "before-call.dynamodb", lambda model, **_: calls.append(model.name)
        )
        for i in range(0, 1000, 10):
            service.suppress_email(f"walker{i}@example.com", "BOUNCE")
        calls.clear()
        service.send_email({"to": "walker1@example.com", "subject": "s", "text": "t"})
        print(f"(a) one send to one recipient: {len(calls)} DynamoDB call(s) {sorted(set(calls))}")
        calls.clear()
        bulk = [
            {"to": f"walker{i}@example.com", "subject": "Weekly", "text": "Walk on!"}
            for i in range(messages)
        ]
        result = service.send_bulk_emails(bulk)
        suppressed = sum(1 for r in result.results if r.suppressed)
        print(
            f"    {messages:,} bulk messages: {len(calls)} BatchGetItem calls "
            f"({messages // service.bulk_batch_size} provider calls), {suppressed} suppressed"
        )

        memory = create_email_service("mock")
        dynamo = create_email_service("mock", email_suppression_table=TABLE)
        message = {"to": "ann@example.com", "subject": "s", "text": "t"}
        count = 2000
        fast = _rate(lambda: memory.send_email(message), count)
        table = _rate(lambda: dynamo.send_email(message), count)
        print("(b) single sends per second through the mock provider:")
        print(f"    list in memory                  {fast:8.0f} /s")
        print(f"    list in DynamoDB (moto, local)  {table:8.0f} /s")


def webhooks() -> None:
    from milequest.web.email_webhooks import SnsVerifier
    from milequest.web.email_webhooks.resend import verify_resend
    from milequest.web.email_webhooks.sendgrid import load_public_key, verify_sendgrid

    from tests.runtime.email.webhook_signing import (
        RESEND_SECRET,
        TOPIC,
        fixture,
        sendgrid_headers,
        sendgrid_key,
        sns_notification,
        sns_signer,
        svix_headers,
    )

    count = 2000
    print("(c) verifying one webhook request:")
    with sns_signer() as signer:
        verifier = SnsVerifier(trusted_url=signer.trusted)
        for version in ("1", "2"):
            note = signer.sign(sns_notification(fixture("event-bounce.json")), version)
            body = json.dumps(note).encode()
            cost = _per_call_us(lambda body=body: verifier.verify(body, {TOPIC}), count)
            print(f"    SNS signature v{version} (certificate cached)   {cost:8.1f} us")
    body = json.dumps(fixture("resend-email-bounced.json")).encode()
    headers = svix_headers(body)
    cost = _per_call_us(lambda: verify_resend(RESEND_SECRET, body, headers), count)
    print(f"    Resend (Svix HMAC-SHA256)                  {cost:8.1f} us")
    key, public = sendgrid_key()
    body = json.dumps(fixture("sendgrid-events.json")).encode()
    signed = {k.lower(): v for k, v in sendgrid_headers(key, body).items()}
    loaded = load_public_key(public)
    cost = _per_call_us(lambda: verify_sendgrid(loaded, body, signed), count)
    print(f"    SendGrid (ECDSA P-256, 12 events)          {cost:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    _env()
    lookups(args.messages)
    webhooks()


if __name__ == "__main__":
    main()
