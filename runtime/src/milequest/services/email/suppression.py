"""The shared suppression list: one store every provider checks before sending.

Entries are keyed by the lower-cased bare address and a *scope*: ``BLOCK`` for a bounce or a
complaint (nothing may be sent), ``UNSUB#<category>`` for an unsubscribe from one bulk
category, ``UNSUB#*`` for an unsubscribe from every bulk category. A bounce replaces an
earlier complaint for the same address and the other way round, as in SES's list.

Backends: :class:`MemorySuppressionStore` (tests, the mock, one process) and
:class:`~milequest.services.email.suppression_dynamodb.DynamoSuppressionStore` (AWS and the
local stack: every process sees the same list), chosen by ``EMAIL_SUPPRESSION_TABLE``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .addresses import address_key
from .results import SuppressedEmail, SuppressionReason

if TYPE_CHECKING:
    from .settings import EmailSettings

ALL_CATEGORIES = "*"
"""The category of an unsubscribe from every bulk category."""

BLOCK_SCOPE = "BLOCK"
_UNSUB_PREFIX = "UNSUB#"
_CATEGORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def valid_category(value: object) -> bool:
    """Whether ``value`` can name a bulk category (letters, digits, ``_.-``, at most 64)."""
    return isinstance(value, str) and bool(_CATEGORY.match(value))


def scope_of(reason: SuppressionReason, category: str | None) -> str:
    """The scope an entry with ``reason`` (and ``category``, for unsubscribes) is stored under."""
    if reason is SuppressionReason.UNSUBSCRIBE:
        return _UNSUB_PREFIX + (category or ALL_CATEGORIES)
    return BLOCK_SCOPE


def scopes_checked(category: str | None) -> tuple[str, ...]:
    """The scopes that stop a message: transactional (no category) or bulk in ``category``."""
    if category is None:
        return (BLOCK_SCOPE,)
    return (BLOCK_SCOPE, _UNSUB_PREFIX + category, _UNSUB_PREFIX + ALL_CATEGORIES)


@runtime_checkable
class SuppressionStore(Protocol):
    """Where the suppression list lives. Addresses are compared case-insensitively."""

    def add(self, entry: SuppressedEmail) -> None:
        """Insert or replace the entry with the same address and scope."""

    def remove(self, address: str, scope: str = BLOCK_SCOPE) -> bool:
        """Delete one entry; False when there was none."""

    def suppressed(self, addresses: Iterable[str], category: str | None = None) -> set[str]:
        """The lower-cased bare addresses of ``addresses`` a message in ``category`` skips."""

    def entries(self) -> Iterator[SuppressedEmail]:
        """Every entry, in no particular order."""


class MemorySuppressionStore:
    """A thread-safe in-process store (one list per instance)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], SuppressedEmail] = {}
        self._lock = threading.Lock()

    def add(self, entry: SuppressedEmail) -> None:
        key = (address_key(entry.address), scope_of(entry.reason, entry.category))
        with self._lock:
            self._entries[key] = entry

    def remove(self, address: str, scope: str = BLOCK_SCOPE) -> bool:
        with self._lock:
            return self._entries.pop((address_key(address), scope), None) is not None

    def suppressed(self, addresses: Iterable[str], category: str | None = None) -> set[str]:
        scopes = scopes_checked(category)
        keys = {address_key(a) for a in addresses}
        with self._lock:
            return {key for key in keys if any((key, s) in self._entries for s in scopes)}

    def entries(self) -> Iterator[SuppressedEmail]:
        with self._lock:
            return iter(list(self._entries.values()))


def create_suppression_store(settings: EmailSettings) -> SuppressionStore:
    """DynamoDB when ``EMAIL_SUPPRESSION_TABLE`` is set, otherwise a new in-memory store."""
    if settings.email_suppression_table:
        from .suppression_dynamodb import DynamoSuppressionStore

        return DynamoSuppressionStore(settings.email_suppression_table)
    return MemorySuppressionStore()
