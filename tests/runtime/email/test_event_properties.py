"""Property-based tests of the SES event handler: arbitrary records (and event shapes)
around one valid record, which must still be processed; the reply keeps its shape."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from milequest.handlers.ses_events import handler
from milequest.services import register_service
from milequest.services.email import create_email_service
from milequest.services.email.events import MalformedEvent, parse_ses_message

from tests.runtime.email import hostile
from tests.runtime.email.webhook_signing import fixture

SUMMARY_KEYS = {"events", "suppressed", "skipped", "unusable", "failed_suppressions"}
TEMPLATE = fixture("sns-lambda-event.json")["Records"][0]


def _record(message: Any) -> dict[str, Any]:
    record = copy.deepcopy(TEMPLATE)
    record["Sns"]["Message"] = message if isinstance(message, str) else json.dumps(message)
    return record


def _valid() -> dict[str, Any]:
    return _record(fixture("event-complaint.json"))  # complains for recipient@example.com


# Records shaped like SNS's, with hostile parts, and anything at all.
sns_like = st.builds(
    lambda sns, message: {
        **copy.deepcopy(TEMPLATE),
        "Sns": sns if message is None else {**TEMPLATE["Sns"], "Message": message},
    },
    sns=hostile.values,
    message=st.none()
    | hostile.texts
    | st.sampled_from([hostile.deep_list(3000), "[" * 4000 + "]" * 4000]),
)
records = st.lists(sns_like | hostile.values, max_size=5)


@given(before=records, after=records)
def test_the_valid_record_is_processed_whatever_surrounds_it(
    before: list[Any], after: list[Any]
) -> None:
    service = create_email_service("mock")
    register_service("email", service)
    summary = handler({"Records": [*before, _valid(), *after]}, None)
    assert set(summary) == SUMMARY_KEYS
    assert all(isinstance(v, int) and v >= 0 for v in summary.values())
    assert summary["failed_suppressions"] == 0
    assert "recipient@example.com" in {e.address for e in service.get_suppressed_emails()}


@given(event=hostile.values | st.dictionaries(st.just("Records"), hostile.values))
def test_any_event_shape_gets_the_documented_reply(event: Any) -> None:
    register_service("email", create_email_service("mock"))
    summary = handler(event, None)
    assert set(summary) == SUMMARY_KEYS


@given(message=hostile.values | hostile.texts)
def test_parse_ses_message_only_raises_malformed_event(message: Any) -> None:
    try:
        events = parse_ses_message(message)
    except MalformedEvent:
        return
    assert isinstance(events, list)


@pytest.mark.parametrize("hazard", sorted(hostile.HAZARDS))
def test_hazards_as_records_and_messages(hazard: str) -> None:
    value = hostile.HAZARDS[hazard]
    service = create_email_service("mock")
    register_service("email", service)
    summary = handler(
        {"Records": [value, _record(value) if isinstance(value, str) else value, _valid()]}, None
    )
    assert summary["suppressed"] == 1
    assert summary["skipped"] == 2
