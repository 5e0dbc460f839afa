"""Property-based tests of the queue's other public entry points: the wire format, the
dead-letter reader, the acceptance check and the command line (fixed seeds)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milequest.email_dlq import main
from milequest.services.email.acceptance import refused_before_acceptance
from milequest.services.email.dead_letters import DeadLetterQueue, dead_letter
from milequest.services.email.models import coerce_message
from milequest.services.email.queue import (
    MalformedJob,
    claim_check_pointer,
    encode_message,
    new_job,
    parse_job,
)

from tests.runtime.email import hostile

from .queue_harness import QueueHarness

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_bodies = (
    st.text(max_size=200)
    | _json.map(json.dumps)
    | st.builds(
        lambda rest: json.dumps(["software.amazon.payloadoffloading.PayloadS3Pointer", rest]), _json
    )
    | st.builds(
        lambda message, version: json.dumps(
            {
                "version": version,
                "id": "x",
                "enqueued_at": "2026-01-01T00:00:00Z",
                "message": message,
            }
        ),
        _json,
        st.sampled_from([1, 2, "1"]),
    )
)


@given(body=_bodies)
def test_property_reading_a_body_fails_only_as_malformed(body: str) -> None:
    try:
        job = parse_job(body)
    except MalformedJob:
        pass
    else:
        assert isinstance(job.idempotency_key, str)
        assert job.idempotency_key
    pointer = claim_check_pointer(body)
    assert pointer is None or all(isinstance(part, str) for part in pointer)


@given(message=hostile.messages())
def test_property_a_valid_message_survives_the_queue_unchanged(message: Any) -> None:
    try:
        valid = coerce_message(message)
    except Exception:
        return
    job = parse_job(new_job(valid).body())
    restored = coerce_message(job.message)
    before = encode_message(valid)
    after = encode_message(restored)
    assert after.pop("tags")["milequest_id"] == job.id
    assert after.pop("idempotency_key") == job.idempotency_key
    before.pop("tags", None)
    assert after == before


@given(
    message=st.fixed_dictionaries(
        {},
        optional={
            "MessageId": _json,
            "Body": st.one_of(_bodies, _json),
            "ReceiptHandle": _json,
            "MessageAttributes": st.dictionaries(st.text(max_size=12), _json, max_size=4) | _json,
        },
    )
)
def test_property_any_dead_letter_can_be_read(message: dict[str, Any]) -> None:
    letter = dead_letter(message)
    assert isinstance(letter.to_dict(), dict)
    json.dumps(letter.to_dict())


_exceptions = st.sampled_from(
    [ValueError, OSError, ConnectionRefusedError, TimeoutError, RuntimeError, KeyError]
).flatmap(lambda kind: st.builds(kind, st.text(max_size=10)))


@given(exc=_exceptions)
def test_property_the_acceptance_check_answers_for_any_failure(exc: BaseException) -> None:
    assert refused_before_acceptance(exc) is isinstance(exc, ConnectionRefusedError)


@pytest.fixture
def dlq(email_queue: QueueHarness) -> DeadLetterQueue:
    return email_queue.dlq()


@settings(max_examples=30)
@given(
    argv=st.lists(
        st.sampled_from(["list", "redrive", "purge", "--all", "--json", "--yes", "--limit", "3"])
        | st.text(max_size=8),
        max_size=4,
    )
)
def test_property_the_command_line_answers_with_a_status(
    dlq: DeadLetterQueue, argv: list[str]
) -> None:
    out, err = io.StringIO(), io.StringIO()
    try:
        code = main(argv, queue=dlq, stdin=io.StringIO("no\n"), stdout=out, stderr=err)
    except SystemExit as usage:  # argparse's own usage errors
        code = usage.code if isinstance(usage.code, int) else -1
    assert code in (0, 1, 2)
