"""Queue mode's producer side on moto: validation exactly as a direct send, what goes on SQS
(our id, the idempotency key, the tag), the claim check, bulk, and failures of SQS itself."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    RecipientStatus,
    SendResult,
    create_email_service,
)
from milequest.services.email.models import coerce_message
from milequest.services.email.queue import (
    DEAD_LETTER_HEADROOM,
    ID_TAG,
    POINTER_CLASS,
    SIZE_ATTRIBUTE,
    SQS_MAX_MESSAGE_BYTES,
    claim_check_pointer,
    derive_key,
    encode_message,
    parse_job,
    queue_id,
)

from tests.conftest import free_port
from tests.runtime.email import hostile

from .queue_harness import QueueHarness

MESSAGE = {"to": "walker@example.com", "subject": "Your miles", "text": "12.4 miles this week"}
INVALID = [
    ({"to": "not an address", "subject": "s", "text": "t"}, EmailErrorCode.INVALID_EMAIL),
    ({"to": "a@example.com", "text": "no subject"}, EmailErrorCode.INVALID_MESSAGE),
    ({"to": "a@example.com", "subject": "a\r\nBcc: x@y.z", "text": "t"}, "INVALID_MESSAGE"),
    ({"to": [f"w{i}@example.com" for i in range(51)], "subject": "s", "text": "t"}, None),
    ({"to": "a@example.com", "template": "nope"}, EmailErrorCode.TEMPLATE_NOT_FOUND),
    ({"to": "a@example.com", "template": "welcome"}, EmailErrorCode.TEMPLATE_RENDER_FAILED),
    ({"to": "a@example.com", "subject": "s", "text": "t", "from": "x@unverified.example"}, None),
    ({"to": "a@example.com", "subject": "s", "text": "t", "idempotency_key": "a b"}, None),
    ("not a message", EmailErrorCode.INVALID_MESSAGE),
]


def _direct_error(message: object) -> EmailErrorCode:
    with pytest.raises(EmailError) as direct:
        create_email_service("mock", email_delivery="direct").send_email(message)  # type: ignore[arg-type]
    return direct.value.code


@pytest.mark.parametrize(("message", "code"), INVALID)
def test_bad_input_is_refused_as_in_direct_mode_and_never_queued(
    email_queue: QueueHarness, message: object, code: str | None
) -> None:
    expected = _direct_error(message)
    if code is not None:
        assert expected.value == code
    with pytest.raises(EmailError) as queued:
        create_email_service("mock").send_email(message)  # type: ignore[arg-type]
    assert queued.value.code is expected
    assert email_queue.waiting() == 0


def test_a_suppressed_recipient_is_refused_before_the_queue(email_queue: QueueHarness) -> None:
    service = create_email_service("mock")
    service.suppress_email("walker@example.com", "BOUNCE")
    with pytest.raises(EmailError) as refused:
        service.send_email(MESSAGE)
    assert refused.value.code is EmailErrorCode.SUPPRESSED
    result = service.send_email({**MESSAGE, "cc": "friend@example.com"})
    assert result.suppressed == ["walker@example.com"]
    assert result.queued == ["friend@example.com"]
    [sent] = email_queue.take_all()
    assert parse_job(sent["Body"]).recipients == ["friend@example.com"]


def test_a_queued_send_returns_our_id_and_carries_it_to_the_provider(
    email_queue: QueueHarness,
) -> None:
    service = create_email_service("mock")
    result = service.send_email({**MESSAGE, "tags": {"campaign": "weekly"}})
    assert isinstance(result, SendResult)
    assert [r.status for r in result.recipients] == [RecipientStatus.QUEUED]
    assert result.accepted == []
    assert len(result.message_id) == 32
    assert service.outbox == []  # nothing was sent here
    [sent] = email_queue.take_all()
    job = parse_job(sent["Body"])
    assert job.id == result.message_id
    assert job.message["tags"] == {"campaign": "weekly", ID_TAG: result.message_id}
    assert job.message["from"] == "noreply@milequest.example"  # prepared as a direct send
    attributes = sent["MessageAttributes"]
    assert attributes["MilequestId"]["StringValue"] == result.message_id
    assert attributes["IdempotencyKey"]["StringValue"] == job.idempotency_key
    assert coerce_message(job.message).tags[ID_TAG] == result.message_id


def test_the_same_key_gets_the_same_id_and_a_new_message_a_new_one(
    email_queue: QueueHarness,
) -> None:
    service = create_email_service("mock")
    first = service.send_email(MESSAGE)
    again = service.send_email(dict(reversed(list(MESSAGE.items()))))  # same content
    other = service.send_email({**MESSAGE, "text": "13 miles"})
    keyed = service.send_email({**MESSAGE, "idempotency_key": "order-42"})
    keyed_again = service.send_email({**MESSAGE, "text": "changed", "idempotency_key": "order-42"})
    assert first.message_id == again.message_id != other.message_id
    assert keyed.message_id == keyed_again.message_id == queue_id("order-42")
    assert len(email_queue.take_all()) == 5  # the consumer, not the producer, deduplicates


def test_derived_keys_ignore_our_tag_and_any_given_key() -> None:
    message = encode_message(coerce_message(MESSAGE))
    tagged = {**message, "tags": {ID_TAG: "x"}, "idempotency_key": "k"}
    assert derive_key(message) == derive_key(tagged)
    assert derive_key(message) != derive_key({**message, "subject": "other"})


def test_attachments_round_trip_as_base64(email_queue: QueueHarness) -> None:
    data = bytes(range(256)) * 4
    create_email_service("mock").send_email(
        {**MESSAGE, "attachments": [{"filename": "route.gpx", "content": data}]}
    )
    [sent] = email_queue.take_all()
    restored = coerce_message(parse_job(sent["Body"]).message)
    assert restored.attachments[0].content == data
    assert restored.attachments[0].filename == "route.gpx"


def test_a_message_over_the_sqs_limit_goes_through_the_claim_check(
    email_queue: QueueHarness,
) -> None:
    data = os.urandom(2 * 1024 * 1024)  # 2 MB: about 2.7 MB as base64
    result = create_email_service("mock").send_email(
        {**MESSAGE, "attachments": [{"filename": "photos.zip", "content": data}]}
    )
    [sent] = email_queue.take_all()
    bucket, key = claim_check_pointer(sent["Body"]) or ("", "")
    assert json.loads(sent["Body"])[0] == POINTER_CLASS
    assert bucket == email_queue.resources.bucket
    stored = email_queue.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert int(sent["MessageAttributes"][SIZE_ATTRIBUTE]["StringValue"]) == len(stored)
    job = parse_job(stored.decode())
    assert job.id == result.message_id
    assert coerce_message(job.message).attachments[0].content == data


def test_the_claim_check_starts_just_below_the_limit(email_queue: QueueHarness) -> None:
    service = create_email_service("mock")
    room = SQS_MAX_MESSAGE_BYTES - DEAD_LETTER_HEADROOM
    fits = service.send_email({**MESSAGE, "text": "x" * (room - 1_000)})
    assert fits.queued == ["walker@example.com"]
    [inline] = email_queue.take_all()
    assert claim_check_pointer(inline["Body"]) is None
    service.send_email({**MESSAGE, "text": "x" * room})
    [offloaded] = email_queue.take_all()
    assert claim_check_pointer(offloaded["Body"]) is not None


def test_without_a_bucket_a_large_message_is_a_configuration_error(
    email_queue: QueueHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMAIL_QUEUE_BUCKET")
    with pytest.raises(EmailError) as refused:
        create_email_service("mock").send_email({**MESSAGE, "text": "x" * SQS_MAX_MESSAGE_BYTES})
    assert refused.value.code is EmailErrorCode.CONFIGURATION
    assert "EMAIL_QUEUE_BUCKET" in refused.value.message
    assert email_queue.waiting() == 0


def test_bulk_queues_each_valid_message_and_reports_the_rest(email_queue: QueueHarness) -> None:
    messages: list[object] = [
        {"to": f"walker{i}@example.com", "subject": "Weekly", "text": f"{i} miles"}
        for i in range(25)
    ]
    messages.insert(7, {"to": "broken", "subject": "s", "text": "t"})
    result = create_email_service("mock").send_bulk_emails(messages)
    assert (result.succeeded, result.failed) == (25, 1)
    assert result.results[7].error is not None
    assert result.results[7].error.code is EmailErrorCode.INVALID_EMAIL
    queued = [r for r in result.results if r.ok]
    assert all(r.queued and r.provider == "mock" for r in queued)
    assert [r.index for r in result.results] == list(range(26))
    ids = {parse_job(m["Body"]).id for m in email_queue.take_all()}
    assert ids == {r.message_id for r in queued}


def test_sqs_out_of_reach_is_provider_unavailable_and_retryable(
    email_queue: QueueHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{free_port()}")
    service = create_email_service("mock", email_call_timeout=2.0)
    with pytest.raises(EmailError) as failed:
        service.send_email(MESSAGE)
    assert failed.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert failed.value.retryable
    items = list(service.iter_bulk_emails([MESSAGE, {**MESSAGE, "to": "b@example.com"}]))
    assert [i.ok for i in items] == [False, False]
    assert all(i.error is not None and i.error.retryable for i in items)


def test_a_consumer_refuses_a_service_that_would_queue_again(email_queue: QueueHarness) -> None:
    from milequest.services.email import EmailQueueConsumer

    with pytest.raises(EmailError) as refused:
        EmailQueueConsumer(create_email_service("mock"))  # EMAIL_DELIVERY=queue
    assert refused.value.code is EmailErrorCode.CONFIGURATION


def test_queue_mode_needs_a_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_DELIVERY", "queue")
    with pytest.raises(EmailError) as refused:
        create_email_service("mock")
    assert refused.value.code is EmailErrorCode.CONFIGURATION
    assert "EMAIL_QUEUE_URL" in refused.value.message


@settings(max_examples=40)
@given(message=hostile.messages())
def test_property_queue_mode_refuses_what_direct_mode_refuses_and_queues_the_rest_intact(
    email_queue: QueueHarness, message: Any
) -> None:
    direct = create_email_service("mock", email_delivery="direct")
    queued = create_email_service("mock")
    try:
        sent = direct.send_email(message)
    except EmailError as exc:
        expected = exc.code
    else:
        expected = None
    if expected is not None:
        with pytest.raises(EmailError) as refused:
            queued.send_email(message)
        assert refused.value.code is expected
        assert email_queue.waiting() == 0
        return
    result = queued.send_email(message)
    assert len(result.queued) == len(sent.accepted)
    [raw] = email_queue.take_all()
    job = parse_job(raw["Body"]) if claim_check_pointer(raw["Body"]) is None else None
    if job is not None:
        restored = coerce_message(job.message)
        assert restored.tags[ID_TAG] == result.message_id
        assert restored.subject == direct.last.subject
        assert [a.content for a in restored.attachments] == [a[2] for a in direct.last.attachments]
