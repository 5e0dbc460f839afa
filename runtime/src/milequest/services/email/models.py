"""The message model: what callers pass to ``send_email`` (as a model or an equivalent dict)."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from milequest.services import jsonsafe
from milequest.services.jsonsafe import clip

from .addresses import AddressError, check_header, has_line_break, is_unicode, normalize_address
from .errors import EmailError, EmailErrorCode
from .limits import MAX_MESSAGE_BYTES, MAX_RECIPIENTS, MAX_TEMPLATE_DATA_BYTES
from .suppression import valid_category

_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,256}$")
_ADDRESS_FIELDS = frozenset({"to", "cc", "bcc", "from_email", "reply_to"})


def _b64_len(n: int) -> int:
    """Bytes of ``n`` bytes once base64-encoded in 76-character lines with CRLF."""
    encoded = (n + 2) // 3 * 4
    return encoded + (encoded // 76) * 2


class Attachment(BaseModel):
    """A file attached to a message. ``content`` is bytes (a str is taken as UTF-8 text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filename: str = Field(min_length=1, max_length=255)
    content: bytes
    content_type: str | None = Field(None, max_length=78)
    content_id: str | None = Field(None, max_length=78, description="For inline images")

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: object) -> object:
        if isinstance(value, dict) and "base64" in value:
            try:
                return base64.b64decode(str(value["base64"]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise PydanticCustomError("INVALID_MESSAGE", "bad base64: {e}", {"e": exc}) from exc
        return value

    @field_validator("filename", "content_type", "content_id")
    @classmethod
    def _no_breaks(cls, value: str | None) -> str | None:
        if value is not None and has_line_break(value):
            raise PydanticCustomError("INVALID_MESSAGE", "line break in attachment field")
        return value

    @property
    def mime_type(self) -> str:
        return (
            self.content_type
            or mimetypes.guess_type(self.filename)[0]
            or ("application/octet-stream")
        )


class EmailMessage(BaseModel):
    """One email: recipients, sender, subject and bodies — or a template and its data.

    ``to`` takes one address or a list; ``from`` (or ``from_email``) defaults to
    ``DEFAULT_FROM_EMAIL``. Addresses may be ``addr`` or ``Name <addr>``. ``category`` makes
    the message bulk mail of that category (one recipient, a one-click unsubscribe link);
    templates listed in ``EMAIL_BULK_TEMPLATES`` get theirs automatically.
    ``idempotency_key`` (printable ASCII, at most 256) makes sends of the same key one send:
    in queue mode within ``EMAIL_IDEMPOTENCY_TTL``; in direct mode only where the provider
    honours one (Resend, for 24 hours). Without it, queue mode derives one from the message.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=False)

    to: list[str]
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    from_email: str | None = Field(None, alias="from")
    reply_to: list[str] = Field(default_factory=list)
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    template: str | None = None
    template_data: dict[str, Any] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    configuration_set: str | None = None
    category: str | None = None
    idempotency_key: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, value: object) -> object:
        # Lone surrogates cannot be encoded by any provider's client: refuse them here.
        if isinstance(value, Mapping):
            for name, item in value.items():
                if name != "template_data" and not _plain_unicode(item):
                    address = name in _ADDRESS_FIELDS or name == "from"
                    raise PydanticCustomError(
                        "INVALID_EMAIL" if address else "INVALID_MESSAGE",
                        "{name} is not valid Unicode text",
                        {"name": name},
                    )
        return value

    @field_validator("to", "cc", "bcc", "reply_to", mode="before")
    @classmethod
    def _listify(cls, value: object) -> object:
        if value is None:
            return []
        return [value] if isinstance(value, str) else value

    @field_validator("to", "cc", "bcc", "reply_to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        try:
            return [normalize_address(v) for v in value]
        except AddressError as exc:
            raise PydanticCustomError("INVALID_EMAIL", "{e}", {"e": str(exc)}) from None

    @field_validator("from_email")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_address(value)
        except AddressError as exc:
            raise PydanticCustomError("INVALID_EMAIL", "{e}", {"e": str(exc)}) from None

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        if value is not None and has_line_break(value):
            raise PydanticCustomError("INVALID_MESSAGE", "line break in subject (header injection)")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            return dict(check_header(k, v) for k, v in value.items())
        except ValueError as exc:
            raise PydanticCustomError("INVALID_MESSAGE", "{e}", {"e": str(exc)}) from None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not _TAG.match(key) or not _TAG.match(val):
                raise PydanticCustomError(
                    "INVALID_MESSAGE", "tag names and values use [A-Za-z0-9_-], at most 256"
                )
        return value

    @field_validator("template", "configuration_set")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or has_line_break(value)):
            raise PydanticCustomError("INVALID_MESSAGE", "names must be non-empty, one line")
        return value

    @field_validator("idempotency_key")
    @classmethod
    def _idempotency_key(cls, value: str | None) -> str | None:
        if value is not None and not _IDEMPOTENCY_KEY.match(value):
            raise PydanticCustomError(
                "INVALID_MESSAGE", "idempotency_key: 1 to 256 printable ASCII characters"
            )
        return value

    @field_validator("category")
    @classmethod
    def _category(cls, value: str | None) -> str | None:
        if value is not None and not valid_category(value):
            raise PydanticCustomError(
                "INVALID_MESSAGE", "category: letters, digits and _.- (at most 64)"
            )
        return value

    @field_validator("template_data", mode="before")
    @classmethod
    def _data(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value  # pydantic reports the wrong type
        try:
            size = len(jsonsafe.dumps(value).encode())
        except ValueError as exc:  # JsonSafetyError, or an integer past the digit limit
            raise PydanticCustomError(
                "INVALID_MESSAGE", "template data must be plain JSON data: {e}", {"e": str(exc)}
            ) from None
        if size > MAX_TEMPLATE_DATA_BYTES:
            raise PydanticCustomError(
                "MESSAGE_TOO_LARGE", "template data is {n} bytes (max 262144)", {"n": size}
            )
        return value

    @model_validator(mode="after")
    def _whole(self) -> EmailMessage:
        if not self.to and not self.cc and not self.bcc:
            raise PydanticCustomError("INVALID_EMAIL", "no recipients")
        count = len(self.to) + len(self.cc) + len(self.bcc)
        if count > MAX_RECIPIENTS:
            raise PydanticCustomError(
                "TOO_MANY_RECIPIENTS",
                "{n} recipients; at most {m} per message (to + cc + bcc)",
                {"n": count, "m": MAX_RECIPIENTS},
            )
        if self.template is None:
            if not (self.subject or "").strip():
                raise PydanticCustomError("INVALID_MESSAGE", "no subject")
            if not self.html and not self.text:
                raise PydanticCustomError("INVALID_MESSAGE", "no body: give html or text")
        size = self.estimated_size()
        if size > MAX_MESSAGE_BYTES:
            raise PydanticCustomError(
                "MESSAGE_TOO_LARGE",
                "about {n} bytes encoded; the limit is {m}",
                {"n": size, "m": MAX_MESSAGE_BYTES},
            )
        return self

    # -- helpers ---------------------------------------------------------------------------

    def recipients(self) -> list[str]:
        """To, Cc and Bcc recipients, in that order."""
        return [*self.to, *self.cc, *self.bcc]

    def estimated_size(self) -> int:
        """Upper bound of the encoded MIME size (bodies and attachments as base64)."""
        head = sum(len(a) + 8 for a in (*self.recipients(), *self.reply_to))
        head += len((self.subject or "").encode()) * 2 + 1024
        head += sum(len(k) + len(v.encode()) + 4 for k, v in self.headers.items())
        bodies = sum(_b64_len(len(p.encode())) for p in (self.html, self.text) if p)
        files = sum(_b64_len(len(a.content)) + 300 for a in self.attachments)
        data = len(jsonsafe.dumps(self.template_data).encode()) if self.template_data else 0
        return head + bodies + files + data


def _plain_unicode(value: object) -> bool:
    """Whether the strings of a top-level field value (str, list or dict of str) are Unicode."""
    if isinstance(value, str):
        return is_unicode(value)
    if isinstance(value, list | tuple):
        return all(not isinstance(v, str) or is_unicode(v) for v in value)
    if isinstance(value, Mapping):
        return all(not isinstance(v, str) or is_unicode(v) for pair in value.items() for v in pair)
    return True


def coerce_message(value: object) -> EmailMessage:
    """``value`` (an :class:`EmailMessage` or a mapping) as a validated message.

    Raises :class:`EmailError` with the most specific code; never a pydantic error.
    """
    if isinstance(value, EmailMessage):
        value = value.model_dump(by_alias=True, exclude_unset=True)
    if not isinstance(value, Mapping):
        raise EmailError(
            EmailErrorCode.INVALID_MESSAGE,
            f"a message must be an EmailMessage or a mapping, not {type(value).__name__}",
        )
    try:
        return EmailMessage.model_validate(dict(value))
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> EmailError:
    """The :class:`EmailError` for a pydantic error: custom codes first, by field otherwise."""
    errors = exc.errors()
    for err in errors:
        if err["type"] in EmailErrorCode.__members__:
            return _build(EmailErrorCode(err["type"]), err)
    err = errors[0]
    field = str(err["loc"][0]) if err["loc"] else ""
    code = (
        EmailErrorCode.INVALID_EMAIL if field in _ADDRESS_FIELDS else EmailErrorCode.INVALID_MESSAGE
    )
    return _build(code, err)


def _build(code: EmailErrorCode, err: Any) -> EmailError:
    where = clip(".".join(str(p) for p in err["loc"]))  # the name of an unknown field
    text = f"{where}: {clip(str(err['msg']), 300)}" if where else clip(str(err["msg"]), 300)
    return EmailError(code, text)
