"""The dead-letter queue and ``python -m milequest.email_dlq``: list with reasons, redrive
chosen or all, purge only after confirmation; and the Lambda entry point of the consumer."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milequest.email_dlq import main
from milequest.handlers import email_queue as email_queue_handler
from milequest.services.email import EmailQueueConsumer, create_email_service
from milequest.services.email.events import parse_ses_message, sample_ses_message

from .queue_harness import QueueHarness
from .ses_server import SesServer


@pytest.fixture
def dead(email_queue: QueueHarness, ses_server: SesServer) -> list[str]:
    """Three messages dead-lettered for MESSAGE_REJECTED (our ids, in queue order)."""
    producer = create_email_service("ses")
    ids = [
        producer.send_email({"to": f"gone{n}@example.com", "subject": "s", "text": "t"}).message_id
        for n in range(3)
    ]
    ses_server.state.rejected.update(f"gone{n}@example.com" for n in range(3))
    email_queue.drain(EmailQueueConsumer(create_email_service("ses", email_delivery="direct")))
    ses_server.state.rejected.clear()
    return ids


def _run(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_list_shows_each_message_with_its_reason(
    dead: list[str], email_queue: QueueHarness
) -> None:
    code, out, _ = _run("list", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["milequest_id"] for r in rows) == sorted(dead)
    for row in rows:
        assert row["code"] == "MESSAGE_REJECTED"
        assert row["recipients"][0] in row["reason"]
        assert row["receives"] == 1
        assert row["provider"] == "ses"
    code, text, _ = _run("list")
    assert "3 message(s)" in text
    assert text.count("MESSAGE_REJECTED") == 3
    assert email_queue.dlq().count() == 3  # listing leaves them in place


def test_redrive_moves_the_chosen_messages_back_without_their_reason(
    dead: list[str], email_queue: QueueHarness, ses_server: SesServer
) -> None:
    code, out, _ = _run("redrive", dead[1])
    assert code == 0
    assert "redrove 1 message(s)" in out
    assert sorted(d.milequest_id or "" for d in email_queue.dead_letters()) == sorted(
        [dead[0], dead[2]]
    )
    [moved] = email_queue.take_all()
    assert moved["MessageAttributes"]["MilequestId"]["StringValue"] == dead[1]
    assert "ErrorCode" not in moved["MessageAttributes"]
    code, _, err = _run("redrive", "no-such-id")
    assert code == 2
    assert "not found" in err


def test_redrive_all_then_the_consumer_sends_them(
    dead: list[str], email_queue: QueueHarness, ses_server: SesServer
) -> None:
    assert _run("redrive", "--all")[0] == 0
    assert email_queue.dead_letters() == []
    email_queue.drain(EmailQueueConsumer(create_email_service("ses", email_delivery="direct")))
    assert len(ses_server.state.sent) == 3


def test_purge_asks_first(dead: list[str], email_queue: QueueHarness) -> None:
    name = email_queue.resources.dead_letter_queue_url.rsplit("/", 1)[1]
    code, out, _ = _run("purge", stdin="yes\n")
    assert code == 1
    assert "not confirmed" in out
    assert email_queue.dlq().count() == 3
    code, out, _ = _run("purge", stdin=f"{name}\n")
    assert code == 0
    assert email_queue.dlq().count() == 0


def test_usage_and_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as usage:
        _run("redrive")  # neither ids nor --all
    assert usage.value.code == 2
    monkeypatch.delenv("EMAIL_DEAD_LETTER_QUEUE_URL", raising=False)
    code, _, err = _run("list")
    assert code == 2
    assert "EMAIL_DEAD_LETTER_QUEUE_URL" in err


def test_the_module_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "milequest.email_dlq", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "redrive" in done.stdout
    assert "purge" in done.stdout


# -- the Lambda entry point ------------------------------------------------------------------


def test_the_handler_builds_one_consumer_and_sends(
    email_queue: QueueHarness, ses_server: SesServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "ses")
    email_queue_handler.reset()
    create_email_service("ses").send_email({"to": "a@example.com", "subject": "s", "text": "t"})
    email_queue.drain(email_queue_handler.handler)
    assert len(ses_server.state.sent) == 1
    first = email_queue_handler.consumer()
    assert email_queue_handler.consumer() is first
    email_queue_handler.reset()


def test_the_handler_fails_every_record_when_it_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EMAIL_IDEMPOTENCY_TABLE", raising=False)
    email_queue_handler.reset()
    event = {"Records": [{"messageId": "m-1", "body": "{}"}, {"body": "no id"}, "junk"]}
    assert email_queue_handler.handler(event, None) == {
        "batchItemFailures": [{"itemIdentifier": "m-1"}]
    }
    assert email_queue_handler.handler("not an event", None) == {"batchItemFailures": []}
    email_queue_handler.reset()


@settings(max_examples=40)
@given(
    event=st.none()
    | st.integers()
    | st.text()
    | st.lists(st.integers())
    | st.dictionaries(
        st.text(max_size=8), st.lists(st.dictionaries(st.text(max_size=10), st.text(max_size=10)))
    )
)
def test_property_the_handler_never_raises_when_it_cannot_start(
    monkeypatch: pytest.MonkeyPatch, event: Any
) -> None:
    monkeypatch.delenv("EMAIL_IDEMPOTENCY_TABLE", raising=False)
    email_queue_handler.reset()
    response = email_queue_handler.handler(event, None)
    assert set(response) == {"batchItemFailures"}
    assert all(set(f) == {"itemIdentifier"} for f in response["batchItemFailures"])


# -- our id comes back in events -------------------------------------------------------------


def test_ses_events_carry_our_id_from_the_message_tag() -> None:
    message = sample_ses_message("bounce", "gone@example.com")
    message["mail"]["tags"]["milequest_id"] = ["0123456789abcdef0123456789abcdef"]
    [event] = parse_ses_message(message)
    assert event.milequest_id == "0123456789abcdef0123456789abcdef"
    [untagged] = parse_ses_message(sample_ses_message("bounce", "gone@example.com"))
    assert untagged.milequest_id is None
