"""The email queue: what ``EMAIL_DELIVERY=queue`` puts on SQS, and how.

A message that passed every check of a direct send (validation, the suppression list, the
provider's own rules) goes on ``EMAIL_QUEUE_URL`` as one SQS message:

- the body is JSON, ``{"version": 1, "id": ..., "enqueued_at": ..., "message": {...}}``,
  the message's fields as ``send_email`` takes them (attachments as ``{"base64": ...}``);
- its idempotency key is the message's ``idempotency_key``, else derived from the message
  (a SHA-256 of its canonical JSON), so the same message enqueued twice sends once;
- our id (``id``, 32 hex digits) is derived from the key and travels to the provider as the
  tag ``milequest_id`` (SES ``EmailTags``, Resend ``tags``, SendGrid ``custom_args``), so
  provider events name it;
- the attributes ``IdempotencyKey`` and ``MilequestId`` let the consumer and the
  dead-letter tools read both without the body.

A message whose body and attributes exceed SQS's limit (1 MiB: botocore's SQS model and
moto agree, up from 256 KiB) less room for the dead-letter attributes goes through a claim
check: the body is stored in ``EMAIL_QUEUE_BUCKET`` and the SQS body is the pointer AWS's
SQS extended clients write (``["software.amazon.payloadoffloading.PayloadS3Pointer",
{"s3BucketName": ..., "s3Key": ...}]``, attribute ``ExtendedPayloadSize``), so those
libraries can read our messages. The Python extended client itself is not used: it is not a
dependency, it offloads everything over 256 KiB (the old limit) by monkey-patching boto3
clients, and a Lambda consumer gets its records in the event, where it does not help.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import EmailError, EmailErrorCode
from .results import BulkItemResult, ErrorInfo, RecipientResult, RecipientStatus, SendResult

if TYPE_CHECKING:
    from .models import EmailMessage
    from .service import Outgoing
    from .settings import EmailSettings

SQS_MAX_MESSAGE_BYTES = 1_048_576
"""One SQS message, body and attributes together (and one batch call's total)."""
DEAD_LETTER_HEADROOM = 4_096
"""Bytes kept free for the attributes a dead-lettered copy adds (its error code and reason)."""
BATCH_ENTRIES = 10
"""Messages per ``SendMessageBatch`` call (SQS's maximum)."""
FORMAT_VERSION = 1
ID_TAG = "milequest_id"
"""The tag carrying our id to the provider and back in its events (reserved)."""
KEY_ATTRIBUTE = "IdempotencyKey"
ID_ATTRIBUTE = "MilequestId"
SIZE_ATTRIBUTE = "ExtendedPayloadSize"
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
CLAIM_CHECK_PREFIX = "email-queue/"


class MalformedJob(ValueError):
    """An SQS message that is not a queued email this version can read."""


@dataclass(frozen=True)
class QueuedEmail:
    """One queued message: our id, its idempotency key and the message to send."""

    id: str
    idempotency_key: str
    message: dict[str, Any]
    enqueued_at: datetime

    def body(self) -> str:
        """The JSON body of the SQS message (or of the claim-checked object)."""
        return json.dumps(
            {
                "version": FORMAT_VERSION,
                "id": self.id,
                "enqueued_at": self.enqueued_at.isoformat(),
                "message": self.message,
            },
            separators=(",", ":"),
        )

    def attributes(self) -> dict[str, Any]:
        """The SQS message attributes of this message."""
        return {
            KEY_ATTRIBUTE: {"DataType": "String", "StringValue": self.idempotency_key},
            ID_ATTRIBUTE: {"DataType": "String", "StringValue": self.id},
        }

    @property
    def recipients(self) -> list[str]:
        """To, Cc and Bcc, as queued."""
        return [
            str(address)
            for name in ("to", "cc", "bcc")
            for address in _listed(self.message.get(name))
        ]


class _Job(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal[1]
    id: str
    enqueued_at: datetime
    message: dict[str, Any]


def _listed(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def encode_message(message: EmailMessage) -> dict[str, Any]:
    """``message`` as JSON data that ``send_email`` accepts back unchanged."""
    data: dict[str, Any] = message.model_dump(
        mode="json", by_alias=True, exclude_defaults=True, exclude={"attachments"}
    )
    if message.attachments:
        data["attachments"] = [
            {
                **attachment.model_dump(exclude={"content"}, exclude_none=True),
                "content": {"base64": base64.b64encode(attachment.content).decode("ascii")},
            }
            for attachment in message.attachments
        ]
    return data


def derive_key(message: Mapping[str, Any]) -> str:
    """The idempotency key of a message without one: a hash of its canonical JSON."""
    content = {k: v for k, v in message.items() if k != "idempotency_key"}
    tags = {k: v for k, v in (content.get("tags") or {}).items() if k != ID_TAG}
    content["tags"] = tags
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def queue_id(idempotency_key: str) -> str:
    """Our id of the message with this key: the same key always gets the same id."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def new_job(message: EmailMessage, *, now: datetime | None = None) -> QueuedEmail:
    """The queued form of a validated, prepared message: key, id and tag set."""
    wire = encode_message(message)
    key = message.idempotency_key or derive_key(wire)
    ident = queue_id(key)
    wire["idempotency_key"] = key
    wire["tags"] = {**(wire.get("tags") or {}), ID_TAG: ident}
    return QueuedEmail(ident, key, wire, now or datetime.now(UTC))


def parse_job(body: str) -> QueuedEmail:
    """A queued message from its JSON body; :class:`MalformedJob` for anything else."""
    try:
        job = _Job.model_validate_json(body)
    except (ValidationError, ValueError) as exc:
        raise MalformedJob(f"not a queued email: {str(exc)[:300]}") from None
    key = job.message.get("idempotency_key")
    if not isinstance(key, str) or not key:
        raise MalformedJob("a queued email without an idempotency_key")
    return QueuedEmail(job.id, key, job.message, job.enqueued_at)


def claim_check_pointer(body: str) -> tuple[str, str] | None:
    """The bucket and key a claim-check body points to, or None for an inline body."""
    if not body.startswith("["):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if (
        isinstance(data, list)
        and len(data) == 2
        and data[0] == POINTER_CLASS
        and isinstance(data[1], dict)
        and isinstance(data[1].get("s3BucketName"), str)
        and isinstance(data[1].get("s3Key"), str)
    ):
        return data[1]["s3BucketName"], data[1]["s3Key"]
    return None


def attributes_size(attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes SQS counts for message attributes: each name, type and value."""
    total = 0
    for name, value in attributes.items():
        total += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        total += len(str(value.get("StringValue", "")).encode())
        total += len(value.get("BinaryValue", b""))
    return total


def aws_client(service: str, settings: EmailSettings) -> Any:
    """A botocore client for ``service`` with standard retries, bounded by the call deadline."""
    import botocore.session
    from botocore.config import Config

    deadline = settings.email_call_timeout
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 3},
        connect_timeout=min(3.0, deadline / 4),
        read_timeout=min(10.0, deadline / 2),
        max_pool_connections=10,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return botocore.session.get_session().create_client(service, region_name=region, config=config)


class EmailQueue:
    """The producer side: puts prepared messages on ``EMAIL_QUEUE_URL``."""

    def __init__(self, settings: EmailSettings, *, sqs: Any = None, s3: Any = None) -> None:
        if not settings.email_queue_url:
            raise ValueError("EMAIL_DELIVERY=queue needs EMAIL_QUEUE_URL (the SQS queue)")
        self.url = settings.email_queue_url
        self.bucket = settings.email_queue_bucket
        self._settings = settings
        self._sqs = sqs
        self._s3 = s3

    @property
    def sqs(self) -> Any:
        """The SQS client, made on first use."""
        if self._sqs is None:
            self._sqs = aws_client("sqs", self._settings)
        return self._sqs

    @property
    def s3(self) -> Any:
        """The S3 client (claim checks), made on first use."""
        if self._s3 is None:
            self._s3 = aws_client("s3", self._settings)
        return self._s3

    def enqueue(self, out: Outgoing, provider: str) -> SendResult:
        """Queue one prepared message; its result has our id and ``QUEUED`` recipients."""
        job = new_job(out.message)
        body, attributes = self._entry(job)
        self.sqs.send_message(QueueUrl=self.url, MessageBody=body, MessageAttributes=attributes)
        return _queued_result(job, out, provider)

    def enqueue_batch(
        self,
        outs: list[Outgoing],
        provider: str,
        failed: Callable[[Outgoing, Exception], BulkItemResult],
    ) -> list[BulkItemResult]:
        """Queue prepared messages in batch calls; a failure is reported per message."""
        results: list[BulkItemResult] = []
        entries: list[tuple[Outgoing, QueuedEmail, str, dict[str, Any]]] = []
        for out in outs:
            try:
                job = new_job(out.message)
                entries.append((out, job, *self._entry(job)))
            except Exception as exc:
                results.append(failed(out, exc))
        for chunk in _chunks(entries):
            try:
                response = self.sqs.send_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(n), "MessageBody": body, "MessageAttributes": attributes}
                        for n, (_, _, body, attributes) in enumerate(chunk)
                    ],
                )
            except Exception as exc:
                results.extend(failed(out, exc) for out, *_ in chunk)
                continue
            refused = {f["Id"]: f for f in response.get("Failed", [])}
            for n, (out, job, _, _) in enumerate(chunk):
                failure = refused.get(str(n))
                if failure is None:
                    results.append(_queued_item(job, out, provider))
                    continue
                code = (
                    EmailErrorCode.PROVIDER_ERROR
                    if failure.get("SenderFault")
                    else EmailErrorCode.PROVIDER_UNAVAILABLE
                )
                info = ErrorInfo(
                    code,
                    f"SQS refused the message: {failure.get('Code')}: {failure.get('Message')}",
                    code is EmailErrorCode.PROVIDER_UNAVAILABLE,
                )
                recipients = tuple(_bare(job.recipients))
                item = BulkItemResult(out.index, False, None, recipients, info, (), provider)
                results.append(item)
        return results

    def _entry(self, job: QueuedEmail) -> tuple[str, dict[str, Any]]:
        """The SQS body and attributes of ``job``: inline, or a claim check when too big."""
        body = job.body()
        attributes = job.attributes()
        size = len(body.encode()) + attributes_size(attributes)
        if size <= SQS_MAX_MESSAGE_BYTES - DEAD_LETTER_HEADROOM:
            return body, attributes
        if not self.bucket:
            raise EmailError(
                EmailErrorCode.CONFIGURATION,
                f"the queued message is {size} bytes, over SQS's {SQS_MAX_MESSAGE_BYTES}; "
                "set EMAIL_QUEUE_BUCKET (the claim-check bucket)",
            )
        key = f"{CLAIM_CHECK_PREFIX}{job.id}/{uuid.uuid4().hex}.json"
        data = body.encode()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json")
        pointer = json.dumps([POINTER_CLASS, {"s3BucketName": self.bucket, "s3Key": key}])
        attributes[SIZE_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(len(data))}
        return pointer, attributes


def _chunks(
    entries: list[tuple[Outgoing, QueuedEmail, str, dict[str, Any]]],
) -> Iterator[list[tuple[Outgoing, QueuedEmail, str, dict[str, Any]]]]:
    """Batches SQS takes: at most 10 messages and 1 MiB in all."""
    chunk: list[tuple[Outgoing, QueuedEmail, str, dict[str, Any]]] = []
    size = 0
    for entry in entries:
        entry_size = len(entry[2].encode()) + attributes_size(entry[3])
        if chunk and (len(chunk) == BATCH_ENTRIES or size + entry_size > SQS_MAX_MESSAGE_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        yield chunk


def _queued_result(job: QueuedEmail, out: Outgoing, provider: str) -> SendResult:
    recipients = [RecipientResult(a, RecipientStatus.QUEUED) for a in _bare(job.recipients)]
    recipients.extend(
        RecipientResult(a, RecipientStatus.SUPPRESSED, "on the suppression list")
        for a in out.suppressed
    )
    return SendResult(job.id, provider, tuple(recipients))


def _queued_item(job: QueuedEmail, out: Outgoing, provider: str) -> BulkItemResult:
    return BulkItemResult(
        out.index,
        True,
        job.id,
        tuple(_bare(job.recipients)),
        None,
        out.suppressed,
        provider,
        queued=True,
    )


def _bare(addresses: list[str]) -> list[str]:
    from .addresses import bare_address

    return [bare_address(a) for a in addresses]
