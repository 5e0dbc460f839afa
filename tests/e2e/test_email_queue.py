"""The email queue on the local stack: mail sent through the HTTP app is queued on the
embedded SQS, sent by the in-process consumers to the SMTP sink, and what cannot be sent
lands in the dead-letter queue, which the ``milequest.email_dlq`` command lists and purges."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import boto3
import httpx
import pytest
from milequest.local import LocalStack
from milequest.local.email_queue import LocalEmailQueue
from milequest.services.registry import reset_services

from .conftest import stack_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def queued() -> Iterator[tuple[LocalStack, LocalEmailQueue]]:
    """The stack as ``make dev`` runs it: the email queue on the embedded AWS, its variables
    exported, two consumer workers."""
    with (
        pytest.MonkeyPatch.context() as patch,
        LocalStack(stack_config(email_delivery="queue", email_queue_workers=2)) as stack,
    ):
        patch.setenv("EMAIL_QUEUE_RETRY_DELAY", "1")
        reset_services()
        assert stack.email_queue is not None
        try:
            yield stack, stack.email_queue
        finally:
            reset_services()


def _eventually(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_mail_from_the_http_app_is_queued_then_sent_by_the_consumers(
    queued: tuple[LocalStack, LocalEmailQueue],
) -> None:
    stack, queue = queued
    with httpx.Client(base_url=stack.urls["console"], timeout=30) as console:
        answers = [
            console.post(
                "api/email",
                json={"to": f"walker{n}@runners.example", "subject": f"Week {n}"},
            )
            for n in range(5)
        ]
    assert [a.status_code for a in answers] == [200] * 5
    statuses = [a.json()["recipients"][0]["status"] for a in answers]
    assert statuses == ["queued"] * 5  # queued, not yet sent
    assert len({a.json()["message_id"] for a in answers}) == 5

    def delivered() -> set[str]:
        return {to for m in stack.smtp.messages for to in m.rcpt_tos}

    _eventually(lambda: {f"walker{n}@runners.example" for n in range(5)} <= delivered())
    assert sum(1 for m in stack.smtp.messages if m.rcpt_tos[0].startswith("walker")) == 5
    _eventually(lambda: queue.state()["queued"] == 0 and queue.state()["in_flight"] == 0)
    assert queue.processed >= 5


def test_what_cannot_be_sent_is_dead_lettered_and_the_command_lists_then_purges_it(
    queued: tuple[LocalStack, LocalEmailQueue],
) -> None:
    stack, queue = queued
    sqs = boto3.client("sqs", **stack.aws.client_options())
    sqs.send_message(QueueUrl=queue.resources.queue_url, MessageBody="not a queued email")
    _eventually(lambda: len(queue.state()["dead_letters"]) == 1)
    [letter] = queue.state()["dead_letters"]
    assert letter["code"] == "INVALID_MESSAGE"
    shown = httpx.get(stack.urls["console"] + "api/state", timeout=30).json()
    assert shown["email_delivery"] == "queue"
    assert [d["code"] for d in shown["email_queue"]["dead_letters"]] == ["INVALID_MESSAGE"]
    assert shown["email_queue"]["processed"] >= 5
    command = [sys.executable, "-m", "milequest.email_dlq"]
    env = dict(os.environ)
    listed = subprocess.run(
        [*command, "list"], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert "INVALID_MESSAGE" in listed.stdout
    assert "1 message(s)" in listed.stdout
    refused = subprocess.run(
        [*command, "purge"], env=env, input="no\n", capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert len(queue.state()["dead_letters"]) == 1
    subprocess.run([*command, "purge", "--yes"], env=env, check=True, timeout=60)
    _eventually(lambda: queue.state()["dead_letters"] == [])
