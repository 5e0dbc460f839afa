"""The commands of ``python -m milequest.email_dlq`` (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from milequest.services.email.dead_letters import DeadLetter, DeadLetterQueue

FAILURE = 2
NOT_CONFIRMED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m milequest.email_dlq",
        description="List, redrive and purge the email queue's dead-letter queue "
        "(EMAIL_DEAD_LETTER_QUEUE_URL; EMAIL_QUEUE_URL to redrive).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="each dead-lettered message with its reason")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument("--limit", type=int, default=None, help="at most this many")
    redrive = commands.add_parser("redrive", help="move messages back to the email queue")
    chosen = redrive.add_mutually_exclusive_group(required=True)
    chosen.add_argument("ids", nargs="*", default=[], help="our ids or SQS message ids")
    chosen.add_argument("--all", action="store_true", help="every message")
    purge = commands.add_parser("purge", help="delete every message, after confirmation")
    purge.add_argument("--yes", action="store_true", help="do not ask (scripts)")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    queue: DeadLetterQueue | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command; the exit status (0 done, 1 not confirmed, 2 failure)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = _parser().parse_args(argv)  # a usage error exits with status 2
    try:
        dlq = queue or _from_environment()
        if args.command == "list":
            return _list(dlq, args.limit, args.json, out)
        if args.command == "redrive":
            ids = None if args.all else set(args.ids)
            moved = dlq.redrive(ids, on_moved=lambda letter: print(_line(letter), file=out))
            print(f"redrove {moved} message(s) to {dlq.queue_url}", file=out)
            if ids is not None and moved < len(ids):
                print(f"{len(ids) - moved} of the named messages were not found", file=err)
                return FAILURE
            return 0
        return _purge(dlq, args.yes, stdin or sys.stdin, out)
    except Exception as exc:  # a command-line tool: report, do not trace
        print(f"error: {type(exc).__name__}: {exc}", file=err)
        return FAILURE


def _from_environment() -> DeadLetterQueue:
    from milequest.services.config import load_settings
    from milequest.services.email.dead_letters import DeadLetterQueue
    from milequest.services.email.errors import EmailError, EmailErrorCode
    from milequest.services.email.queue import aws_client
    from milequest.services.email.settings import EmailSettings

    settings = load_settings(EmailSettings, EmailError, EmailErrorCode.CONFIGURATION)
    if not settings.email_dead_letter_queue_url:
        raise ValueError("set EMAIL_DEAD_LETTER_QUEUE_URL (the email queue's dead-letter queue)")
    return DeadLetterQueue(
        aws_client("sqs", settings), settings.email_dead_letter_queue_url, settings.email_queue_url
    )


def _line(letter: DeadLetter) -> str:
    why = f"{letter.code}: {letter.reason}" if letter.code else "(moved by the redrive policy)"
    who = ", ".join(letter.recipients) or letter.claim_check or "?"
    when = letter.dead_lettered_at or "?"
    receives = letter.receives if letter.receives is not None else "?"
    return f"{letter.milequest_id or letter.message_id}  {when}  receives={receives}  {who}  {why}"


def _list(dlq: DeadLetterQueue, limit: int | None, as_json: bool, out: TextIO) -> int:
    letters = dlq.entries(limit)
    show: Callable[[DeadLetter], str] = (
        (lambda letter: json.dumps(letter.to_dict(), ensure_ascii=False)) if as_json else _line
    )
    for letter in letters:
        print(show(letter), file=out)
    if not as_json:
        print(f"{len(letters)} message(s) in {dlq.url}", file=out)
    return 0


def _purge(dlq: DeadLetterQueue, yes: bool, stdin: TextIO, out: TextIO) -> int:
    name = dlq.url.rstrip("/").rpartition("/")[2]
    if not yes:
        count = dlq.count()
        print(f"This deletes all {count} message(s) of {name} for good.", file=out)
        print(f"Type the queue's name ({name}) to confirm: ", end="", file=out, flush=True)
        answer = stdin.readline().strip()
        if answer != name:
            print("not confirmed; nothing was deleted", file=out)
            return NOT_CONFIRMED
    dlq.purge()
    print(f"purged {name}", file=out)
    return 0
