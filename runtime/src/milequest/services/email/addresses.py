"""Address and header checks shared by the message model and the service methods."""

from __future__ import annotations

import re
from email.utils import formataddr, getaddresses

from milequest.services.jsonsafe import clip, shorten

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable ASCII but ":"
MAX_ADDRESS_CHARS = 998  # RFC 5322's line limit: no usable "Name <addr>" is longer
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

# Headers the service writes itself; letting callers set them would let them forge or
# duplicate routing information.
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "sender",
        "message-id",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)


class AddressError(ValueError):
    """An address (or domain) that cannot be used."""


def has_line_break(value: str) -> bool:
    """Whether ``value`` holds CR, LF or NUL (any of them would break a header)."""
    return "\r" in value or "\n" in value or "\x00" in value


def is_unicode(value: str) -> bool:
    """Whether ``value`` is valid Unicode text (no lone surrogates): what UTF-8 can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def normalize_address(value: object) -> str:
    """``value`` as ``addr`` or ``Name <addr>``, checked by email-validator and normalized.

    Domains become ASCII (IDNA) and non-ASCII local parts are refused, because SES and most
    SMTP relays do not offer SMTPUTF8.
    """
    if not isinstance(value, str):
        raise AddressError(f"expected an email address string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise AddressError("empty email address")
    if len(text) > MAX_ADDRESS_CHARS:
        # Checked first: email-validator takes about a second on a megabyte.
        raise AddressError(f"address longer than {MAX_ADDRESS_CHARS} characters")
    if has_line_break(text):
        raise AddressError(f"line break in address {shorten(value)}")
    if not is_unicode(text):
        raise AddressError(f"address {shorten(value)} is not valid Unicode")
    if "<" in text or ">" in text:
        parsed = getaddresses([text])
        if len(parsed) != 1 or not parsed[0][1] or not text.endswith(">"):
            raise AddressError(f"not a single email address: {shorten(value)}")
        name, addr = parsed[0]
    else:  # a bare address is taken whole, so that "a b@x.com" is refused, not trimmed
        name, addr = "", text
    from email_validator import EmailNotValidError, validate_email

    try:
        checked = validate_email(addr, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise AddressError(f"invalid email address {shorten(addr)}: {clip(str(exc))}") from None
    ascii_addr = checked.ascii_email or checked.normalized
    return formataddr((name, ascii_addr)) if name else ascii_addr


def bare_address(formatted: str) -> str:
    """The ``addr`` part of ``Name <addr>`` (lower-cased domain kept as given)."""
    return getaddresses([formatted])[0][1] or formatted


def address_key(formatted: str) -> str:
    """Case-insensitive key for comparing addresses (suppression, verification)."""
    return bare_address(formatted).lower()


def domain_of(formatted: str) -> str:
    return bare_address(formatted).rpartition("@")[2].lower()


def normalize_domain(value: object) -> str:
    """A DNS domain name in ASCII (IDNA), lower case, without a trailing dot."""
    if not isinstance(value, str) or not value.strip():
        raise AddressError("expected a domain name")
    text = value.strip().rstrip(".").lower()
    if len(text) > 253:
        raise AddressError("a domain name has at most 253 characters")
    if has_line_break(text) or "@" in text or not is_unicode(text):
        raise AddressError(f"not a domain name: {shorten(value)}")
    try:
        ascii_name = text.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise AddressError(f"not a domain name: {shorten(value)} ({exc})") from None
    labels = ascii_name.split(".")
    if len(labels) < 2 or len(ascii_name) > 253 or not all(_DOMAIN_LABEL.match(x) for x in labels):
        raise AddressError(f"not a domain name: {shorten(value)}")
    return ascii_name


def check_header(name: object, value: object) -> tuple[str, str]:
    """A custom header, refusing injection (line breaks), bad names and reserved headers."""
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise ValueError(f"invalid header name {shorten(name)}")
    if name.lower() in RESERVED_HEADERS:
        raise ValueError(f"header {shorten(name)} is set by the service; use the message fields")
    if not isinstance(value, str):
        raise ValueError(f"header {shorten(name)} must be a string")
    if has_line_break(value):
        raise ValueError(f"line break in header {shorten(name)}")
    if not is_unicode(value):
        raise ValueError(f"header {shorten(name)} is not valid Unicode")
    return name, value
