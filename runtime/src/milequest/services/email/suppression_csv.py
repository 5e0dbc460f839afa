"""The suppression list as CSV, for migrations between providers and accounts.

Columns: ``address,reason,category,last_update,source`` (``category`` for unsubscribes
only; ``last_update`` in ISO 8601 with a time zone). Reading is done row by row so that a
bad row is reported with its line number and the others still go in.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from .results import SuppressedEmail

FIELDS = ("address", "reason", "category", "last_update", "source")


@dataclass(frozen=True)
class CsvEntry:
    """One row as read: the values still to be checked by the email service."""

    line: int
    address: str
    reason: str
    category: str | None
    last_update: datetime | None
    source: str | None


class CsvFormatError(ValueError):
    """A row (or the header) that is not the suppression CSV format; names the line."""


def write_csv(entries: Iterable[SuppressedEmail], stream: TextIO) -> int:
    """Write ``entries`` with a header row; returns how many."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(FIELDS)
    count = 0
    for entry in entries:
        writer.writerow(
            (
                entry.address,
                entry.reason.value,
                entry.category or "",
                entry.last_update.isoformat(),
                entry.source or "",
            )
        )
        count += 1
    return count


def read_csv(stream: TextIO) -> Iterator[CsvEntry | CsvFormatError]:
    """The rows of ``stream``: each a :class:`CsvEntry`, or the :class:`CsvFormatError`
    saying what is wrong with it. A missing or unknown header raises at once."""
    reader = csv.reader(stream)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise CsvFormatError(f"line 1: {exc}") from None
    names = [h.strip().lower() for h in header or []]
    if names[:2] != ["address", "reason"] or names != list(FIELDS[: len(names)]):
        raise CsvFormatError(f"line 1: the header must be {','.join(FIELDS)}")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield CsvFormatError(f"line {reader.line_num}: {exc}")
            continue
        if not any(cell.strip() for cell in row):
            continue
        yield _entry(reader.line_num, row)


def _entry(line: int, row: list[str]) -> CsvEntry | CsvFormatError:
    values = dict(zip(FIELDS, (cell.strip() for cell in row), strict=False))
    stamp = values.get("last_update") or ""
    when = None
    if stamp:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return CsvFormatError(f"line {line}: last_update {stamp[:40]!r} is not ISO 8601")
    return CsvEntry(
        line,
        values.get("address", ""),
        values.get("reason", ""),
        values.get("category") or None,
        when,
        values.get("source") or None,
    )
