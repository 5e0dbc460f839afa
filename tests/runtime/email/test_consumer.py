"""The queue consumer under faults, against the local SES v2 endpoint and moto's SQS, S3 and
DynamoDB. Every scenario ends with each message sent (once, but in the documented crash
window) or in the dead-letter queue with its reason; the SES calls are counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milequest.services.email import EmailQueueConsumer, create_email_service
from milequest.services.email.consumer import retry_delay
from milequest.services.email.queue import ID_TAG
from milequest.services.metrics import InMemorySink

from .queue_harness import QueueHarness
from .ses_server import SesServer

MESSAGE = {"to": "walker@example.com", "subject": "Your miles", "text": "12.4 miles this week"}


@pytest.fixture
def metrics() -> InMemorySink:
    return InMemorySink()


@pytest.fixture
def consumer_for(ses_server: SesServer, metrics: InMemorySink) -> Callable[..., EmailQueueConsumer]:
    """A consumer sending through the local SES endpoint (no client-side rate)."""

    def make(**settings: Any) -> EmailQueueConsumer:
        service = create_email_service(
            "ses",
            email_delivery="direct",
            ses_max_send_rate=10_000.0,
            metrics=metrics,
            **{"ses_max_attempts": 1, **settings},
        )
        return EmailQueueConsumer(service)

    return make


def _enqueue(count: int = 1, **fields: Any) -> list[str]:
    producer = create_email_service("ses")
    return [
        producer.send_email({**MESSAGE, "to": f"walker{n}@example.com", **fields}).message_id
        for n in range(count)
    ]


def _sent_ids(ses_server: SesServer) -> list[str]:
    """Our id of each message SES accepted, from the tag it carried."""
    return [
        tag["Value"]
        for sent in ses_server.state.sent
        for tag in sent.get("EmailTags", [])
        if tag["Name"] == ID_TAG
    ]


def test_throttling_for_a_while_then_success_sends_once(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
    metrics: InMemorySink,
) -> None:
    [queued] = _enqueue()
    ses_server.state.throttle_sends = 5  # two receives of two attempts, then one more 429
    email_queue.drain(consumer_for(ses_max_attempts=2))
    assert ses_server.state.sends() == 6
    assert _sent_ids(ses_server) == [queued]
    assert metrics.total("QueueRetries", Code="RATE_LIMITED") == 2
    assert metrics.total("QueueSent", Provider="ses") == 1
    assert email_queue.dead_letters() == []


def test_503_until_the_circuit_opens_then_recovery_sends_each_once(
    queue_factory: Callable[..., QueueHarness],
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
    metrics: InMemorySink,
) -> None:
    queue = queue_factory(max_receives=6)
    queued = _enqueue(4)
    consumer = consumer_for(email_breaker_failures=2, email_breaker_reset=1.0)
    ses_server.state.unavailable_sends = -1
    source = queue.source()
    assert source.poll_once(consumer.handle) == 4
    # Two calls reached SES and opened the circuit; the other two failed fast, without a call.
    assert ses_server.state.sends() == 2
    assert metrics.total("QueueRetries", Code="PROVIDER_UNAVAILABLE") == 4
    assert metrics.values("CircuitOpen", Provider="ses")[:1] == [1]
    assert queue.waiting() == 4  # back on the queue, none lost
    ses_server.state.unavailable_sends = 0
    queue.drain(consumer)
    assert sorted(_sent_ids(ses_server)) == sorted(queued)
    assert ses_server.state.sends() == 2 + 4  # the probe and the rest, each once
    assert metrics.values("CircuitOpen", Provider="ses")[-1] == 0
    assert queue.dead_letters() == []


def test_the_same_key_queued_twice_sends_once(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
    metrics: InMemorySink,
) -> None:
    first = _enqueue(idempotency_key="signup-7")
    second = _enqueue(idempotency_key="signup-7", subject="Sent again by mistake")
    assert first == second
    email_queue.drain(consumer_for())
    assert ses_server.state.sends() == 1
    assert _sent_ids(ses_server) == first
    assert metrics.total("QueueDuplicatesSkipped") == 1
    assert email_queue.waiting() == 0
    assert email_queue.dead_letters() == []


def test_a_two_megabyte_message_with_an_attachment_goes_through_the_claim_check(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    [queued] = _enqueue(attachments=[{"filename": "route-photos.zip", "content": data}])
    email_queue.drain(consumer_for())
    assert _sent_ids(ses_server) == [queued]
    raw = ses_server.state.sent[0]["Content"]["Raw"]["Data"]
    mime = message_from_bytes(raw, policy=policy.default)
    [attachment] = list(mime.iter_attachments())  # type: ignore[attr-defined]
    assert attachment.get_filename() == "route-photos.zip"
    assert attachment.get_payload(decode=True) == data


def test_a_permanently_rejected_recipient_is_dead_lettered_at_once(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
) -> None:
    [queued] = _enqueue()
    ses_server.state.rejected.add("walker0@example.com")
    email_queue.drain(consumer_for())
    assert ses_server.state.sends() == 1  # not retried
    [letter] = email_queue.dead_letters()
    assert letter.milequest_id == queued
    assert letter.code == "MESSAGE_REJECTED"
    assert "walker0@example.com" in (letter.reason or "")
    assert letter.receives == 1
    assert letter.provider == "ses"
    assert letter.recipients == ("walker0@example.com",)


def test_on_its_last_allowed_receive_a_failing_message_is_dead_lettered_with_its_reason(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
) -> None:
    [queued] = _enqueue()
    ses_server.state.unavailable_sends = -1
    email_queue.drain(consumer_for(email_breaker_failures=100))
    assert ses_server.state.sends() == 3  # max receives: 3
    [letter] = email_queue.dead_letters()
    assert (letter.milequest_id, letter.code, letter.receives) == (
        queued,
        "PROVIDER_UNAVAILABLE",
        3,
    )


def test_a_recipient_suppressed_while_queued_is_dead_lettered_without_a_call(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
) -> None:
    _enqueue()
    consumer = consumer_for()
    consumer.service.suppress_email("walker0@example.com", "COMPLAINT")
    email_queue.drain(consumer)
    assert ses_server.state.sends() == 0
    [letter] = email_queue.dead_letters()
    assert letter.code == "SUPPRESSED"


def test_unreadable_records_are_dead_lettered_as_invalid(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
) -> None:
    email_queue.sqs.send_message(QueueUrl=email_queue.resources.queue_url, MessageBody="{oops")
    [queued] = _enqueue(text="x" * 1_100_000)  # claim-checked, and then the body vanishes
    for item in email_queue.s3.list_objects_v2(Bucket=email_queue.resources.bucket)["Contents"]:
        email_queue.s3.delete_object(Bucket=email_queue.resources.bucket, Key=item["Key"])
    email_queue.drain(consumer_for())
    assert ses_server.state.sends() == 0
    letters = {letter.milequest_id: letter for letter in email_queue.dead_letters()}
    assert {letter.code for letter in letters.values()} == {"INVALID_MESSAGE"}
    assert "is gone" in (letters[queued].reason or "")
    assert letters[queued].claim_check is not None


def test_a_key_another_consumer_holds_waits_for_it(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
    metrics: InMemorySink,
) -> None:
    [queued] = _enqueue()
    consumer = consumer_for()
    [message] = email_queue.take_all()
    key = message["MessageAttributes"]["IdempotencyKey"]["StringValue"]
    # Another consumer is mid-send for 5 more seconds: its INPROGRESS record says so.
    consumer.persistence.configure(consumer.config, key_prefix="milequest-email")
    consumer.persistence.save_inprogress(
        data={"idempotency_key": key}, remaining_time_in_millis=5000
    )
    _enqueue()
    assert email_queue.source().poll_once(consumer.handle) == 1
    assert ses_server.state.sends() == 0
    assert metrics.total("QueueRetries", Code="PROVIDER_UNAVAILABLE") == 1
    assert email_queue.source().poll_once(consumer.handle) == 0  # hidden until its time is up
    email_queue.drain(consumer, timeout=30)
    assert _sent_ids(ses_server) == [queued]
    assert metrics.total("QueuePossibleDuplicates") == 1  # the other may have sent: counted
    assert email_queue.dead_letters() == []


def test_retry_delays_grow_with_the_receive_count() -> None:
    assert [retry_delay(n, 30) for n in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]
    assert retry_delay(3, 0) == 0


def test_a_failed_record_is_hidden_for_its_retry_delay(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_QUEUE_RETRY_DELAY", "60")
    _enqueue()
    ses_server.state.unavailable_sends = 1
    assert email_queue.source().poll_once(consumer_for().handle) == 1
    assert email_queue.source().poll_once(consumer_for().handle) == 0  # hidden a minute
    assert email_queue.waiting() == 1


# -- crashes: real processes, killed ----------------------------------------------------------

_WORKER = """
import json, os, sys, time
from milequest.local.email_queue import EmailQueueResources, LocalEmailQueue
from milequest.services.email import EmailQueueConsumer, create_email_service

resources = EmailQueueResources(**json.loads(os.environ["TEST_RESOURCES"]))
options = json.loads(os.environ["TEST_OPTIONS"])
consumer = EmailQueueConsumer(
    create_email_service("ses", email_delivery="direct", ses_max_send_rate=1000.0)
)

def handle(event, context):
    response = consumer.handle(event, context)
    print("handled", flush=True)  # the records are done; the batch is not acknowledged yet
    time.sleep(600)
    return response

LocalEmailQueue(resources, options, invocation_timeout_s=1.0, wait_seconds=5).poll_once(handle)
"""


@pytest.fixture
def worker(email_queue: QueueHarness) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    children: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        resources = email_queue.resources
        child = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            env={
                **os.environ,
                "EMAIL_PROVIDER": "ses",
                "TEST_RESOURCES": json.dumps(vars(resources)),
                "TEST_OPTIONS": json.dumps(email_queue.options),
            },
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
        child.wait()


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_killed_after_the_record_completed_but_before_the_ack_sends_no_second_time(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
    metrics: InMemorySink,
    worker: Callable[[], subprocess.Popen[str]],
) -> None:
    [queued] = _enqueue()
    child = worker()
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "handled"
    [record] = email_queue.idempotency_records()
    assert record["status"]["S"] == "COMPLETED"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert email_queue.waiting() == 1  # never acknowledged
    email_queue.drain(consumer_for())  # it comes back after the visibility timeout
    assert _sent_ids(ses_server) == [queued]
    assert metrics.total("QueueDuplicatesSkipped") == 1
    assert metrics.total("QueuePossibleDuplicates") == 0
    assert email_queue.dead_letters() == []


def test_killed_between_acceptance_and_the_record_sends_at_most_one_duplicate_counted(
    email_queue: QueueHarness,
    ses_server: SesServer,
    consumer_for: Callable[..., EmailQueueConsumer],
    metrics: InMemorySink,
    worker: Callable[[], subprocess.Popen[str]],
) -> None:
    [queued] = _enqueue()
    ses_server.state.hold = threading.Event()  # SES takes the message, then never answers
    child = worker()
    try:
        _wait_for(lambda: len(ses_server.state.sent) == 1)
        [record] = email_queue.idempotency_records()
        assert record["status"]["S"] == "INPROGRESS"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        ses_server.state.hold.set()
        ses_server.state.hold = None
    email_queue.drain(consumer_for())
    assert _sent_ids(ses_server) == [queued, queued]  # the documented window: one duplicate
    assert metrics.total("QueuePossibleDuplicates") == 1  # and it is counted
    [record] = email_queue.idempotency_records()
    assert record["status"]["S"] == "COMPLETED"
    assert email_queue.dead_letters() == []


# -- any records at all ---------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_record = st.fixed_dictionaries(
    {"messageId": st.text(min_size=1, max_size=12)},
    optional={
        "body": st.text(max_size=60) | _json | st.just('{"version": 1, "id": "x"}'),
        "receiptHandle": st.text(max_size=8) | _json,
        "attributes": st.fixed_dictionaries(
            {}, optional={"ApproximateReceiveCount": st.text(max_size=3) | _json}
        )
        | _json,
        "messageAttributes": st.dictionaries(st.text(max_size=8), _json, max_size=2) | _json,
    },
)
_events = (
    _json
    | st.fixed_dictionaries({"Records": st.lists(_record | _json, max_size=4)})
    | st.builds(object)
)


@pytest.fixture
def mock_consumer(email_queue: QueueHarness) -> EmailQueueConsumer:
    return EmailQueueConsumer(create_email_service("mock", email_delivery="direct"))


@settings(max_examples=30)
@given(event=_events)
def test_property_any_event_gets_the_documented_batch_response(
    mock_consumer: EmailQueueConsumer, event: Any
) -> None:
    response = mock_consumer.handle(event, None)
    assert set(response) == {"batchItemFailures"}
    failures = response["batchItemFailures"]
    records = event.get("Records") if isinstance(event, dict) else None
    ids = {r.get("messageId") for r in records if isinstance(r, dict)} if records else set()
    for failure in failures:
        assert set(failure) == {"itemIdentifier"}
        assert failure["itemIdentifier"] in ids
