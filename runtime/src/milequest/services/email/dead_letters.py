"""The email queue's dead-letter queue: list it with reasons, redrive, purge.

SQS has no way to read a message without receiving it. Listing therefore receives every
message (each hidden for ``visibility`` seconds while the listing runs) and makes them
visible again at once when it ends; redriving receives, re-sends the chosen messages to the
email queue without their failure attributes, and deletes them from the dead-letter queue.
A message the consumer dead-lettered carries ``ErrorCode`` and ``ErrorMessage``; one the
queue's redrive policy moved (a consumer that crashed on every receive) has neither.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .consumer import (
    DEAD_LETTERED_AT_ATTRIBUTE,
    ERROR_CODE_ATTRIBUTE,
    ERROR_MESSAGE_ATTRIBUTE,
    PROVIDER_ATTRIBUTE,
    REASON_ATTRIBUTES,
    RECEIVES_ATTRIBUTE,
)
from .queue import ID_ATTRIBUTE, KEY_ATTRIBUTE, claim_check_pointer, parse_job

_RECEIVE_BATCH = 10


@dataclass(frozen=True)
class DeadLetter:
    """One message in the dead-letter queue, with why it is there."""

    message_id: str
    milequest_id: str | None
    idempotency_key: str | None
    code: str | None
    reason: str | None
    receives: int | None
    dead_lettered_at: str | None
    provider: str | None
    recipients: tuple[str, ...] = ()
    claim_check: str | None = None
    """``s3://bucket/key`` of the body, for a message sent through the claim check."""
    receipt_handle: str = field(default="", repr=False, compare=False)
    body: str = field(default="", repr=False, compare=False)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)

    def matches(self, ids: Collection[str]) -> bool:
        """Whether ``ids`` names this message (by our id or SQS's message id)."""
        return self.message_id in ids or (
            self.milequest_id is not None and self.milequest_id in ids
        )

    def to_dict(self) -> dict[str, Any]:
        """What the listing shows (JSON-friendly)."""
        return {
            "message_id": self.message_id,
            "milequest_id": self.milequest_id,
            "idempotency_key": self.idempotency_key,
            "code": self.code,
            "reason": self.reason,
            "receives": self.receives,
            "dead_lettered_at": self.dead_lettered_at,
            "provider": self.provider,
            "recipients": list(self.recipients),
            "claim_check": self.claim_check,
        }


def dead_letter(message: Mapping[str, Any]) -> DeadLetter:
    """A ``ReceiveMessage`` message of the dead-letter queue, read (never raises)."""
    found = message.get("MessageAttributes")
    attributes = {
        str(name): {
            "DataType": str(value.get("DataType", "String")),
            "StringValue": str(value["StringValue"]),
        }
        for name, value in (found.items() if isinstance(found, Mapping) else ())
        if isinstance(value, Mapping) and "StringValue" in value
    }

    def text(name: str) -> str | None:
        value = attributes.get(name)
        return value["StringValue"] if value else None

    body = str(message.get("Body", ""))
    recipients: tuple[str, ...] = ()
    claim = None
    pointer = claim_check_pointer(body)
    if pointer is not None:
        claim = f"s3://{pointer[0]}/{pointer[1]}"
    else:
        try:
            recipients = tuple(parse_job(body).recipients)
        except ValueError:
            recipients = ()
    receives = text(RECEIVES_ATTRIBUTE)
    return DeadLetter(
        message_id=str(message.get("MessageId", "")),
        milequest_id=text(ID_ATTRIBUTE),
        idempotency_key=text(KEY_ATTRIBUTE),
        code=text(ERROR_CODE_ATTRIBUTE),
        reason=text(ERROR_MESSAGE_ATTRIBUTE),
        receives=int(receives) if receives and receives.isdigit() else None,
        dead_lettered_at=text(DEAD_LETTERED_AT_ATTRIBUTE),
        provider=text(PROVIDER_ATTRIBUTE),
        recipients=recipients,
        claim_check=claim,
        receipt_handle=str(message.get("ReceiptHandle", "")),
        body=body,
        attributes=attributes,
    )


class DeadLetterQueue:
    """Operations on ``dead_letter_url``, redriving into ``queue_url``, through ``sqs``."""

    def __init__(self, sqs: Any, dead_letter_url: str, queue_url: str | None = None) -> None:
        self.sqs = sqs
        self.url = dead_letter_url
        self.queue_url = queue_url

    def count(self) -> int:
        """Messages waiting (SQS's approximate count)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes.get("ApproximateNumberOfMessages", 0))

    def entries(self, limit: int | None = None, *, visibility: int = 30) -> list[DeadLetter]:
        """Up to ``limit`` messages (all by default), oldest receipts first."""
        found = list(self._each(limit, visibility))
        self._release(found)
        return found

    def redrive(
        self,
        ids: Collection[str] | None = None,
        *,
        visibility: int = 30,
        on_moved: Callable[[DeadLetter], None] | None = None,
    ) -> int:
        """Move the messages ``ids`` names (every one when None) back to the email queue;
        returns how many moved. Their failure attributes are dropped."""
        if not self.queue_url:
            raise ValueError("redriving needs the email queue's URL (EMAIL_QUEUE_URL)")
        moved = 0
        skipped: list[DeadLetter] = []
        for letter in self._each(None, visibility):
            if ids is not None and not letter.matches(ids):
                skipped.append(letter)
                continue
            kept = {k: v for k, v in letter.attributes.items() if k not in REASON_ATTRIBUTES}
            self.sqs.send_message(
                QueueUrl=self.queue_url, MessageBody=letter.body, MessageAttributes=kept
            )
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=letter.receipt_handle)
            moved += 1
            if on_moved is not None:
                on_moved(letter)
        self._release(skipped)
        return moved

    def purge(self) -> None:
        """Delete every message (SQS allows one purge per queue a minute)."""
        self.sqs.purge_queue(QueueUrl=self.url)

    def _each(self, limit: int | None, visibility: int) -> Iterator[DeadLetter]:
        seen: set[str] = set()
        while limit is None or len(seen) < limit:
            wanted = _RECEIVE_BATCH if limit is None else min(_RECEIVE_BATCH, limit - len(seen))
            messages = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=wanted,
                VisibilityTimeout=visibility,
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            fresh = [m for m in messages if m.get("MessageId") not in seen]
            if not fresh:
                return
            for message in fresh:
                seen.add(str(message.get("MessageId")))
                yield dead_letter(message)

    def _release(self, letters: list[DeadLetter]) -> None:
        """Make received messages visible again now rather than after ``visibility``."""
        for start in range(0, len(letters), _RECEIVE_BATCH):
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                    for n, letter in enumerate(letters[start : start + _RECEIVE_BATCH])
                ],
            )
