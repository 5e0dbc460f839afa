"""An in-process suppression list, for providers without one of their own (mock, smtp)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime

from .addresses import address_key
from .results import SuppressedEmail, SuppressionReason


class LocalSuppressionList:
    """Thread-safe map of address -> (reason, time), keyed case-insensitively."""

    def __init__(self) -> None:
        self._entries: dict[str, SuppressedEmail] = {}
        self._lock = threading.Lock()

    def add(self, address: str, reason: SuppressionReason) -> None:
        key = address_key(address)
        with self._lock:
            self._entries[key] = SuppressedEmail(key, reason, datetime.now(UTC))

    def remove(self, address: str) -> bool:
        with self._lock:
            return self._entries.pop(address_key(address), None) is not None

    def among(self, addresses: Iterable[str]) -> set[str]:
        with self._lock:
            return {key for a in addresses if (key := address_key(a)) in self._entries}

    def entries(self) -> list[SuppressedEmail]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.address)


class LocalSuppression:
    """Mixin: the email service's suppression hooks served from a :class:`LocalSuppressionList`."""

    suppression: LocalSuppressionList

    def _suppressed_among(self, addresses: list[str]) -> set[str]:
        return self.suppression.among(addresses)

    def _suppress(self, address: str, reason: SuppressionReason) -> None:
        self.suppression.add(address, reason)

    def _unsuppress(self, address: str) -> bool:
        return self.suppression.remove(address)

    def _list_suppressed(self) -> list[SuppressedEmail]:
        return self.suppression.entries()
