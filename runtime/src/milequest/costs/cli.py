"""``python -m milequest.costs``: estimate, plot, or read live usage from CloudWatch.

Exit codes: 0 done, 2 refused input (one line on stderr), 1 any other failure (one line).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from .errors import CostError
from .estimate import Estimate, estimate
from .metrics import ENVIRONMENTS, MAX_DAYS, ObservedUsage, observe, profile_from_observed
from .prices import PriceBook, load_prices
from .profile import DAYS_PER_MONTH, MAX_SESSION_MINUTES
from .realtime import realtime_volumes
from .report import render

PROG = "python -m milequest.costs"
_INPUT_CODES = {"INVALID_PROFILE", "UNKNOWN_REGION", "INVALID_PRICES"}


class _Refusal(Exception):
    """A command-line error, reported on one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the usage and exits; one line is what an operator needs here.
        raise _Refusal(message)


def _parser() -> _Parser:
    parser = _Parser(prog=PROG, description="Monthly cost of the realtime and email options.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    est = commands.add_parser("estimate", help="price a usage profile given on the command line")
    usage = est.add_argument_group("usage (a month is 30 days)")
    usage.add_argument("--connections", type=float, help="peak concurrent connections")
    usage.add_argument("--connection-minutes", type=float, help="connection-minutes a month")
    usage.add_argument(
        "--average-share", type=float, help="average / peak connections (default 0.5)"
    )
    usage.add_argument("--subscriptions-per-connection", type=float, help="default 2")
    events = usage.add_mutually_exclusive_group()
    events.add_argument("--events-per-day", type=float, help="triggered events a day")
    events.add_argument("--events-per-month", type=float)
    usage.add_argument("--subscribers", type=float, help="subscribers per event (default 5)")
    usage.add_argument("--client-events-per-day", type=float)
    usage.add_argument("--presence-joins-per-day", type=float)
    usage.add_argument("--presence-members", type=float, help="default: --subscribers")
    emails = usage.add_mutually_exclusive_group()
    emails.add_argument("--emails-per-day", type=float)
    emails.add_argument("--emails-per-month", type=float)
    _shared_usage(usage)
    _common(est)

    live = commands.add_parser("from-metrics", help="price the usage CloudWatch recorded")
    live.add_argument("--env", required=True, choices=ENVIRONMENTS)
    live.add_argument("--days", type=float, default=30.0, help=f"window, up to {MAX_DAYS}")
    live.add_argument("--api-id", help="default: the API named milequest-<env>-realtime")
    live.add_argument("--stage", default="live", help="WebSocket stage name (default live)")
    live.add_argument("--namespace", default="MileQuest", help="namespace of our metrics")
    usage = live.add_argument_group("usage the metrics do not show")
    usage.add_argument("--presence-joins-per-day", type=float, default=0.0)
    _shared_usage(usage)
    _common(live)
    return parser


def _shared_usage(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--session-minutes",
        type=float,
        help=f"how long a connection lasts (default and maximum {MAX_SESSION_MINUTES})",
    )
    group.add_argument("--payload-bytes", type=int, help="bytes of an event frame (default 1024)")
    group.add_argument("--dedicated-ips", type=int, help="SES dedicated IPs (default 0)")


def _common(command: argparse.ArgumentParser) -> None:
    stack = command.add_argument_group("our stack")
    stack.add_argument("--architecture", choices=("arm64", "x86_64"))
    stack.add_argument("--lambda-memory-mb", type=int, help="default 512")
    stack.add_argument(
        "--authorizer", action="store_true", default=None, help="a Lambda authorizer on $connect"
    )
    stack.add_argument(
        "--sharded-fanout", action="store_true", default=None, help="SQS + fan-out workers"
    )
    stack.add_argument("--shard-size", type=int, help="connections per shard (default 500)")
    out = command.add_argument_group("output")
    out.add_argument("--region", help="price region (default: the data file's)")
    out.add_argument("--prices", help="another price data file (JSON)")
    out.add_argument("--plot", metavar="PNG", help="also draw cost against scale into PNG")
    out.add_argument("--format", choices=("table", "json"), default="table")


def _given(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _per_month(per_day: float | None, per_month: float | None) -> float | None:
    return per_day * DAYS_PER_MONTH if per_day is not None else per_month


def _profile(args: argparse.Namespace) -> dict[str, Any]:
    return _given(
        peak_connections=args.connections,
        connection_minutes=args.connection_minutes,
        average_share=args.average_share,
        session_minutes=args.session_minutes,
        subscriptions_per_connection=args.subscriptions_per_connection,
        events_per_month=_per_month(args.events_per_day, args.events_per_month),
        subscribers_per_event=args.subscribers,
        client_events_per_month=_per_month(args.client_events_per_day, None),
        presence_joins_per_month=_per_month(args.presence_joins_per_day, None),
        presence_members=args.presence_members,
        payload_bytes=args.payload_bytes,
        emails_per_month=_per_month(args.emails_per_day, args.emails_per_month),
        ses_dedicated_ips=args.dedicated_ips,
    )


def _stack(args: argparse.Namespace) -> dict[str, Any]:
    return _given(
        architecture=args.architecture,
        lambda_memory_mb=args.lambda_memory_mb,
        authorizer=args.authorizer,
        sharded_fanout=args.sharded_fanout,
        shard_size=args.shard_size,
    )


def _observed_lines(observed: ObservedUsage, result: Estimate) -> str:
    o = observed
    month = DAYS_PER_MONTH / o.days
    modelled = realtime_volumes(result.profile, result.stack).total_messages
    return "\n".join(
        [
            f"CloudWatch, {o.env} (API {o.api_id}, stage {o.stage}), "
            f"{o.start:%Y-%m-%d %H:%M} to {o.end:%Y-%m-%d %H:%M} UTC ({o.days:g} days)",
            f"  connects {o.connects:,.0f} (busiest hour {o.peak_hour_connects:,.0f}), "
            f"subscribes {o.subscribes:,.0f}, triggers {o.triggers:,.0f}, "
            f"client events {o.client_events:,.0f}, deliveries {o.deliveries:,.0f}, "
            f"emails {o.emails:,.0f}",
            f"  API Gateway counted {o.messages * month:,.0f} messages a month; "
            f"the model counts {modelled:,.0f} for the profile below",
            "",
        ]
    )


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    book: PriceBook = load_prices(args.prices)
    stack, region = _stack(args), args.region
    if args.command == "estimate":
        result = estimate(_profile(args), book, stack=stack, region=region)
        header = ""
    else:
        observed = observe(
            args.env,
            args.days,
            region=region,
            api_id=args.api_id,
            stage=args.stage,
            namespace=args.namespace,
        )
        profile = profile_from_observed(
            observed,
            **_given(
                session_minutes=args.session_minutes,
                presence_joins_per_month=args.presence_joins_per_day * DAYS_PER_MONTH,
                payload_bytes=args.payload_bytes,
                ses_dedicated_ips=args.dedicated_ips,
            ),
        )
        result = estimate(profile, book, stack=stack, region=region)
        header = _observed_lines(observed, result)
    for warning in result.warnings:
        print(f"warning: {warning}", file=err)
    if args.plot:
        from .plot import plot

        plot(result, book, args.plot)
    if args.format == "json":
        out.write(result.model_dump_json(indent=2) + "\n")
    else:
        out.write(header + render(result))
        if args.plot:
            out.write(f"\nPlot written to {args.plot}\n")


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the command line; returns the exit code."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = _parser().parse_args(argv)
        _run(args, out, err)
    except _Refusal as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except CostError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2 if exc.code.value in _INPUT_CODES else 1
    return 0
