"""The commands of ``python -m milequest.email_suppression`` (see the package docstring)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from milequest.services.email.service import EmailService

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m milequest.email_suppression",
        description="Export, import and migrate the shared email suppression list "
        "(EMAIL_SUPPRESSION_TABLE, EMAIL_PROVIDER).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write the list as CSV")
    export.add_argument("--out", help="file to write (default: standard output)")
    load = commands.add_parser("import", help="add the rows of a CSV file to the list")
    load.add_argument("file", help="CSV with address,reason,category,last_update,source")
    commands.add_parser("import-provider", help="copy the provider's own list into the list")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    service: EmailService | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command; returns the exit status (0 ok, 1 some rows refused, 2 failure)."""
    from milequest.services.email import create_email_service
    from milequest.services.errors import ServiceError

    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = _parser().parse_args(argv)
    try:
        email = service or create_email_service()
        if args.command == "export":
            return _export(email, args.out, out, err)
        if args.command == "import":
            return _import(email, args.file, out, err)
        count = email.import_provider_suppressions()
    except ServiceError as exc:
        print(f"error: {exc}", file=err)
        return USAGE_ERROR
    print(f"imported {count} entries from {email.provider_name}", file=out)
    return 0


def _export(email: EmailService, path: str | None, out: TextIO, err: TextIO) -> int:
    from milequest.services.email.suppression_csv import write_csv

    entries = email.get_suppressed_emails()
    if path is None:
        write_csv(entries, out)
        return 0
    try:
        with open(path, "w", encoding="utf-8", newline="") as stream:
            count = write_csv(entries, stream)
    except OSError as exc:
        print(f"error: cannot write {path}: {exc}", file=err)
        return USAGE_ERROR
    print(f"exported {count} entries to {path}", file=out)
    return 0


def _import(email: EmailService, path: str, out: TextIO, err: TextIO) -> int:
    from milequest.services.email.errors import EmailError
    from milequest.services.email.suppression_csv import CsvFormatError, read_csv

    added = refused = 0
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            for row in read_csv(stream):
                if isinstance(row, CsvFormatError):
                    print(f"{path}: {row}", file=err)
                    refused += 1
                    continue
                try:
                    email.suppress_email(
                        row.address,
                        row.reason,
                        row.category,
                        source=row.source or "csv-import",
                        last_update=row.last_update,
                    )
                except EmailError as exc:
                    if exc.code.value not in ("INVALID_EMAIL", "INVALID_MESSAGE"):
                        raise
                    print(f"{path}: line {row.line}: {exc.message}", file=err)
                    refused += 1
                else:
                    added += 1
    except (OSError, UnicodeDecodeError, CsvFormatError) as exc:
        print(f"error: {path}: {exc}", file=err)
        return USAGE_ERROR
    print(f"imported {added} entries, refused {refused}", file=out)
    return 1 if refused else 0
