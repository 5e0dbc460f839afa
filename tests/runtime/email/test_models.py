"""The message model and its validation (no provider involved)."""

from __future__ import annotations

import base64

import pytest
from milequest.services.email import EmailError, EmailErrorCode, EmailMessage
from milequest.services.email.models import MAX_TEMPLATE_DATA_BYTES, coerce_message


def test_accepts_a_model_or_a_mapping() -> None:
    model = EmailMessage(to="a@example.com", subject="s", text="t")
    assert coerce_message(model).to == ["a@example.com"]
    from_dict = coerce_message(
        {"to": ["a@example.com"], "from": "x@example.com", "subject": "s", "html": "h"}
    )
    assert from_dict.from_email == "x@example.com"
    assert (
        coerce_message(
            {"to": "a@example.com", "from_email": "y@example.com", "subject": "s", "text": "t"}
        ).from_email
        == "y@example.com"
    )


def test_addresses_are_normalized() -> None:
    msg = coerce_message(
        {
            "to": ["Zoë <zoe@BÜCHER.example>", "plain@EXAMPLE.com"],
            "subject": "s",
            "text": "t",
        }
    )
    assert msg.to[0].endswith("<zoe@xn--bcher-kva.example>")
    assert msg.to[0].startswith("=?utf-8?")
    assert msg.to[1] == "plain@example.com"


@pytest.mark.parametrize(
    "address",
    [
        "jürgen@example.com",
        "a@b@example.com",
        "two@example.com, three@example.com",
        "<>",
        "a@-x.com",
        "Walker <" + "w" * 1000 + "@example.com>",
        "\ud800@example.com",
        "Bob \ud800 <a@example.com>",
    ],
)
def test_unusable_addresses(address: str) -> None:
    with pytest.raises(EmailError) as info:
        coerce_message({"to": address, "subject": "s", "text": "t"})
    assert info.value.code is EmailErrorCode.INVALID_EMAIL


def test_attachment_content_forms() -> None:
    msg = coerce_message(
        {
            "to": "a@example.com",
            "subject": "s",
            "text": "t",
            "attachments": [
                {"filename": "a.txt", "content": "text"},
                {
                    "filename": "b.bin",
                    "content": {"base64": base64.b64encode(b"\x00\x01").decode()},
                },
            ],
        }
    )
    assert [a.content for a in msg.attachments] == [b"text", b"\x00\x01"]
    assert msg.attachments[0].mime_type == "text/plain"
    assert msg.attachments[1].mime_type == "application/octet-stream"
    for bad in [
        {"filename": "x", "content": {"base64": "***"}},
        {"filename": "a\nb", "content": b""},
    ]:
        with pytest.raises(EmailError) as info:
            coerce_message(
                {"to": "a@example.com", "subject": "s", "text": "t", "attachments": [bad]}
            )
        assert info.value.code is EmailErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"tags": {"bad tag": "x"}}, EmailErrorCode.INVALID_MESSAGE),
        (
            {"template": "welcome", "template_data": {"when": object()}},
            EmailErrorCode.INVALID_MESSAGE,
        ),
        (
            {"template": "welcome", "template_data": {"blob": "x" * MAX_TEMPLATE_DATA_BYTES}},
            EmailErrorCode.MESSAGE_TOO_LARGE,
        ),
        ({"template": "bad\nname"}, EmailErrorCode.INVALID_MESSAGE),
        ({"headers": {"Bad:Name": "x"}}, EmailErrorCode.INVALID_MESSAGE),
        ({"headers": {"X-Num": 5}}, EmailErrorCode.INVALID_MESSAGE),
    ],
)
def test_field_rules(extra: dict[str, object], code: EmailErrorCode) -> None:
    with pytest.raises(EmailError) as info:
        coerce_message({"to": "a@example.com", "subject": "s", "text": "t", **extra})
    assert info.value.code is code


def test_template_messages_need_no_subject_or_body() -> None:
    msg = coerce_message(
        {"to": "a@example.com", "template": "welcome", "template_data": {"name": "A"}}
    )
    assert msg.subject is None
    assert msg.recipients() == ["a@example.com"]


def test_size_estimate_counts_encoding_overhead() -> None:
    small = coerce_message({"to": "a@example.com", "subject": "s", "text": "x" * 3000})
    assert 4000 < small.estimated_size() < 6000
