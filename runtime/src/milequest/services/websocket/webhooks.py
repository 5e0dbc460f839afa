"""Pusher-format webhooks: building, signing, sending, validating and parsing."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from milequest.services import jsonsafe

from . import signing
from .errors import WebSocketError, WebSocketErrorCode
from .models import Webhook, WebhookEvent

logger = logging.getLogger("milequest.services.websocket")

MAX_AGE_SECONDS = 300
KEY_HEADER = "X-Pusher-Key"
SIGNATURE_HEADER = "X-Pusher-Signature"
SEND_TIMEOUT_SECONDS = 2.0


def webhook_body(
    events: Sequence[WebhookEvent | Mapping[str, Any]], time_ms: int | None = None
) -> bytes:
    """The JSON body of a webhook carrying ``events``."""
    items = [
        e.model_dump(exclude_none=True) if isinstance(e, WebhookEvent) else dict(e) for e in events
    ]
    stamp = time_ms if time_ms is not None else int(time.time() * 1000)
    return json.dumps({"time_ms": stamp, "events": items}, separators=(",", ":")).encode()


def signed_webhook(
    key: str,
    secret: str,
    events: Sequence[WebhookEvent | Mapping[str, Any]],
    time_ms: int | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a signed webhook, as Pusher sends them."""
    body = webhook_body(events, time_ms)
    headers = {
        "Content-Type": "application/json",
        KEY_HEADER: key,
        SIGNATURE_HEADER: signing.sign(secret, body),
    }
    return headers, body


def parse_signed_webhook(
    key: str, secret: str, headers: Mapping[str, str], body: str | bytes, now: float | None = None
) -> Webhook:
    """Verify and parse a webhook; raise ``INVALID_WEBHOOK`` on anything wrong."""
    if isinstance(body, str):
        try:
            raw = body.encode()
        except UnicodeEncodeError:
            raise _invalid("the body is not valid text") from None
    elif isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
    else:
        raise _invalid(f"the body must be str or bytes, not {type(body).__name__}")
    try:  # any object with items(): a dict, Starlette's Headers, http.client's message
        lowered = {
            k.lower(): v for k, v in headers.items() if isinstance(k, str) and isinstance(v, str)
        }
    except (AttributeError, TypeError, ValueError):
        raise _invalid("the headers must be a mapping of names to values") from None
    given_key = lowered.get(KEY_HEADER.lower())
    signature = lowered.get(SIGNATURE_HEADER.lower())
    if not given_key or not signature:
        raise _invalid("missing X-Pusher-Key or X-Pusher-Signature header")
    key_ok = signing.constant_time_equal(given_key, key)
    if not (signing.verify(secret, raw, signature) and key_ok):
        raise _invalid("bad signature or unknown key")
    try:
        hook = Webhook.model_validate(jsonsafe.loads(raw))
    except (ValidationError, ValueError) as exc:
        problems = exc.error_count() if isinstance(exc, ValidationError) else 1
        raise _invalid(f"malformed webhook body: {problems} problem(s)") from None
    # Bounded both ways: a stamp far in the future would make a captured body replayable.
    skew = int((now if now is not None else time.time()) * 1000) - hook.time_ms  # ints only
    if not -MAX_AGE_SECONDS * 1000 <= skew <= MAX_AGE_SECONDS * 1000:
        raise _invalid(f"webhook time_ms is more than {MAX_AGE_SECONDS} s from now")
    return hook


def _invalid(message: str) -> WebSocketError:
    return WebSocketError(WebSocketErrorCode.INVALID_WEBHOOK, message)


def send_webhook(url: str, key: str, secret: str, events: Sequence[WebhookEvent]) -> bool:
    """POST a signed webhook to ``url``; log and return False on failure, never raise."""
    if not events:
        return True
    headers, body = signed_webhook(key, secret, events)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as response:
            ok = 200 <= int(response.status) < 300
    except Exception:
        logger.warning("webhook to %s failed", url, exc_info=True)
        return False
    if not ok:
        logger.warning("webhook to %s answered %s", url, response.status)
    return ok
