"""The estimate as a plain-text report: a table per option, totals and break-even points."""

from __future__ import annotations

import textwrap

from .estimate import BreakEven, Estimate
from .profile import DAYS_PER_MONTH
from .results import OPTION_LABELS, OptionCost

_WIDTH = 100
_INLINE_DETAIL = 40


def _count(value: float) -> str:
    """Whole numbers without decimals, small averages with two."""
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _money(usd: float | None) -> str:
    return "no price" if usd is None else f"${usd:,.2f}"


def render(result: Estimate) -> str:
    """The whole report for ``result``."""
    lines = [
        f"Monthly cost estimate in USD, {result.region} prices "
        f"(figures checked {result.prices_checked.isoformat()}); a month is {DAYS_PER_MONTH} days",
        "",
        *_usage(result),
    ]
    for option in result.options:
        lines += ["", *_option(option)]
    lines += ["", "Totals", *_totals(result), "", *_break_even(result)]
    return "\n".join(lines) + "\n"


def _usage(result: Estimate) -> list[str]:
    p = result.profile
    rows = [
        ("peak connections", p.peak_connections),
        ("connection-minutes", p.monthly_connection_minutes),
        ("events triggered", p.events_per_month),
        ("subscribers per event", p.subscribers_per_event),
        ("client events", p.client_events_per_month),
        ("presence joins", p.presence_joins_per_month),
        ("emails", p.emails_per_month),
    ]
    lines = ["Usage per month"]
    lines += [f"  {name:<24}{_count(value):>18}" for name, value in rows]
    lines.append(f"  {'event frame bytes':<24}{p.payload_bytes:>18,}")
    return lines


def _option(option: OptionCost) -> list[str]:
    title = f"{option.kind.capitalize()}: {option.label}"
    lines = [title + (f" (plan {option.plan})" if option.plan else "")]
    for item in option.items:
        row = f"  {item.name:<32}{_count(item.quantity):>18} {item.unit:<12}{item.usd:>12,.2f}"
        if item.detail and len(item.detail) <= _INLINE_DETAIL:
            row += f"  {item.detail}"
        lines.append(row)
        if item.detail and len(item.detail) > _INLINE_DETAIL:
            lines += textwrap.wrap(
                item.detail, _WIDTH, initial_indent="    ", subsequent_indent="    "
            )
    lines.append(f"  {'total':<63}{_money(option.total_usd):>12}")
    lines += [f"  {note}" for note in option.notes]
    return lines


def _totals(result: Estimate) -> list[str]:
    lines = []
    for kind in ("realtime", "email"):
        options = [o for o in result.options if o.kind == kind]
        prices = ", ".join(f"{o.label} {_money(o.total_usd)}" for o in options)
        cheapest = result.cheapest(kind)
        best = cheapest.label if cheapest else "none has a published price"
        lines.append(f"  {kind}: {prices}; cheapest: {best}")
    return lines


def _break_even(result: Estimate) -> list[str]:
    lines = ["Break-even (the profile scaled from 0.001x to 1000x)"]
    if not result.break_even:
        lines.append("  none: the cheaper option is the same at every scale")
    lines += [f"  {describe(point)}" for point in result.break_even]
    return lines


def describe(point: BreakEven) -> str:
    """One break-even point in words."""
    above, below = OPTION_LABELS[point.cheaper_above], OPTION_LABELS[point.cheaper_below]
    if point.kind == "realtime":
        per_day = point.events_per_month / DAYS_PER_MONTH
        where = f"{point.peak_connections:,.0f} peak connections ({per_day:,.0f} events a day)"
    else:
        where = f"{point.emails_per_month:,.0f} emails a month"
    why = "has no published plan above" if point.reason == "limit" else "costs more above"
    return (
        f"{point.kind}: from {where} ({point.scale:.3g}x) {above} is cheaper "
        f"({_money(point.monthly_usd)} a month); {below} {why} that"
    )
