"""One-click unsubscribe (RFC 8058): signed links per recipient and category, and the headers.

A bulk message carries ``List-Unsubscribe: <https://.../email/unsubscribe?token=...>`` (plus
an optional ``mailto:``) and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The
token names the recipient and the category and is signed with HMAC-SHA256, so the endpoint
needs no database to know who is leaving what, and an altered link is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import quote, urlsplit

from .addresses import address_key
from .suppression import valid_category

TOKEN_VERSION = "1"
POST_HEADER_VALUE = "List-Unsubscribe=One-Click"


class InvalidUnsubscribeToken(ValueError):
    """A token that is malformed or whose signature does not match."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, address: str, category: str) -> bytes:
    message = "\0".join((TOKEN_VERSION, address, category)).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).digest()


def sign_token(secret: bytes, address: str, category: str) -> str:
    """The token for ``address`` leaving ``category`` (URL-safe, no padding)."""
    key = address_key(address)
    signature = _b64(_mac(secret, key, category))
    return ".".join((TOKEN_VERSION, _b64(key.encode()), category, signature))


def verify_token(secret: bytes, token: object) -> tuple[str, str]:
    """``(address, category)`` of a genuine token; :class:`InvalidUnsubscribeToken` otherwise."""
    if not isinstance(token, str) or len(token) > 1024:
        raise InvalidUnsubscribeToken("not an unsubscribe token")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != TOKEN_VERSION or not valid_category(parts[2]):
        raise InvalidUnsubscribeToken("not an unsubscribe token")
    try:
        address = _unb64(parts[1]).decode("utf-8")
        signature = _unb64(parts[3])
    except (binascii.Error, ValueError):
        raise InvalidUnsubscribeToken("not an unsubscribe token") from None
    if not hmac.compare_digest(signature, _mac(secret, address, parts[2])):
        raise InvalidUnsubscribeToken("the unsubscribe link's signature does not match")
    return address, parts[2]


def unsubscribe_url(base: str, token: str) -> str:
    """``base`` with ``token`` as its ``token`` query parameter."""
    joiner = "&" if urlsplit(base).query else "?"
    return f"{base}{joiner}token={token}"


def unsubscribe_headers(
    base_url: str, secret: bytes, address: str, category: str, mailto: str | None = None
) -> dict[str, str]:
    """The RFC 8058 headers for one recipient of a bulk message in ``category``."""
    token = sign_token(secret, address, category)
    links = [f"<{unsubscribe_url(base_url, token)}>"]
    if mailto:
        links.append(f"<mailto:{mailto}?subject={quote('unsubscribe ' + category)}>")
    return {"List-Unsubscribe": ", ".join(links), "List-Unsubscribe-Post": POST_HEADER_VALUE}


def parse_bulk_templates(value: str) -> dict[str, str]:
    """``EMAIL_BULK_TEMPLATES`` (``name[:category],...``) as template -> category.

    Raises ``ValueError`` naming the first entry that is not a valid name or category.
    """
    out: dict[str, str] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, _, category = item.partition(":")
        category = category or name
        if not valid_category(name) or not valid_category(category):
            raise ValueError(f"{item!r} is not name[:category] (letters, digits, _.-)")
        out[name] = category
    return out
