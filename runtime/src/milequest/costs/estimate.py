"""The estimate: every option priced for one profile, and where the cheaper option changes."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .email import price_esp, price_ses
from .prices import PriceBook, load_prices
from .profile import StackOptions, UsageProfile, stack_options, usage_profile
from .realtime import price_apigateway, price_pusher
from .results import Kind, OptionCost, OptionId

# Break-even points are searched between a thousandth and a thousand times the profile.
SCALE_RANGE = (1e-3, 1e3)
_GRID_STEPS = 240
_BISECTIONS = 48

PAIRS: tuple[tuple[Kind, OptionId, OptionId], ...] = (
    ("realtime", "apigateway", "pusher"),
    ("email", "ses", "resend"),
    ("email", "ses", "sendgrid"),
)


class BreakEven(BaseModel):
    """At ``scale`` times the profile, ``cheaper_above`` becomes the cheaper option.

    ``reason`` is ``limit`` when the other option has no published price beyond this point.
    """

    model_config = ConfigDict(frozen=True)

    kind: Kind
    cheaper_below: OptionId
    cheaper_above: OptionId
    reason: Literal["price", "limit"]
    scale: float
    peak_connections: float
    events_per_month: float
    emails_per_month: float
    monthly_usd: float


class Estimate(BaseModel):
    """The monthly cost of every option for one profile, in one region's prices."""

    model_config = ConfigDict(frozen=True)

    region: str
    prices_checked: date
    profile: UsageProfile
    stack: StackOptions
    options: tuple[OptionCost, ...]
    break_even: tuple[BreakEven, ...]
    warnings: tuple[str, ...]

    def option(self, option: OptionId) -> OptionCost:
        """The priced option named ``option``."""
        return next(o for o in self.options if o.option == option)

    def cheapest(self, kind: Kind) -> OptionCost | None:
        """The cheapest available option of ``kind`` (None if none has a price)."""
        priced = [o for o in self.options if o.kind == kind and o.total_usd is not None]
        return min(priced, key=lambda o: o.total_usd or 0.0, default=None)


def pricers(
    stack: StackOptions, book: PriceBook, region: str
) -> dict[OptionId, Callable[[UsageProfile], OptionCost]]:
    """One pricing function per option (no validation: callers pass models)."""
    return {
        "apigateway": lambda p: price_apigateway(p, stack, book, region),
        "pusher": lambda p: price_pusher(p, stack, book),
        "ses": lambda p: price_ses(p, book, region),
        "resend": lambda p: price_esp("resend", p, book),
        "sendgrid": lambda p: price_esp("sendgrid", p, book),
    }


def scaled(profile: UsageProfile, kind: Kind, scale: float) -> UsageProfile:
    """``profile`` with the volumes of ``kind`` times ``scale``."""
    if kind == "realtime":
        return profile.scaled_realtime(scale)
    return profile.scaled_email(scale)


def estimate(
    profile: UsageProfile | Mapping[str, Any],
    prices: PriceBook | None = None,
    *,
    stack: StackOptions | Mapping[str, Any] | None = None,
    region: str | None = None,
    today: date | None = None,
) -> Estimate:
    """Price every option for ``profile`` and find the break-even points.

    Raises ``CostError`` (``INVALID_PROFILE``, ``UNKNOWN_REGION``, ``INVALID_PRICES``) and
    nothing else; a stale price file adds a warning rather than failing.
    """
    usage = usage_profile(profile)
    options = stack_options(stack)
    book = prices or load_prices()
    chosen = book.resolve_region(region)
    stale = book.staleness_warning(today or date.today())
    price = pricers(options, book, chosen)

    def total(kind: Kind, option: OptionId) -> Callable[[float], float | None]:
        return lambda scale: price[option](scaled(usage, kind, scale)).total_usd

    points = []
    for kind, a, b in PAIRS:
        for scale, below, above, reason in crossings(total(kind, a), total(kind, b), a, b):
            at = scaled(usage, kind, scale)
            points.append(
                BreakEven(
                    kind=kind,
                    cheaper_below=below,
                    cheaper_above=above,
                    reason=reason,
                    scale=scale,
                    peak_connections=at.peak_connections,
                    events_per_month=at.events_per_month,
                    emails_per_month=at.emails_per_month,
                    monthly_usd=price[above](at).total_usd or 0.0,
                )
            )
    return Estimate(
        region=chosen,
        prices_checked=book.oldest(),
        profile=usage,
        stack=options,
        options=tuple(fn(usage) for fn in price.values()),
        break_even=tuple(points),
        warnings=(stale,) if stale else (),
    )


def crossings(
    cost_a: Callable[[float], float | None],
    cost_b: Callable[[float], float | None],
    a: OptionId,
    b: OptionId,
) -> list[tuple[float, OptionId, OptionId, Literal["price", "limit"]]]:
    """Scales where the cheaper of two options changes: (scale, was, becomes, reason).

    Costs are step functions (plans) against near-linear ones, so the search walks a
    geometric grid and bisects each interval where the winner changes; the scale returned
    is the first at which the new winner costs no more (to float precision).
    """

    def winner(scale: float) -> tuple[OptionId | None, bool]:
        cost_a_, cost_b_ = cost_a(scale), cost_b(scale)
        x = math.inf if cost_a_ is None else cost_a_
        y = math.inf if cost_b_ is None else cost_b_
        if x == y:
            return None, False
        return (a if x < y else b), math.inf in (x, y)

    lo, hi = SCALE_RANGE
    ratio = (hi / lo) ** (1 / _GRID_STEPS)
    found: list[tuple[float, OptionId, OptionId, Literal["price", "limit"]]] = []
    previous: tuple[float, OptionId] | None = None
    for step in range(_GRID_STEPS + 1):
        scale = lo * ratio**step
        current, _ = winner(scale)
        if current is None:
            continue
        if previous is not None and current != previous[1]:
            left, right = previous[0], scale
            for _ in range(_BISECTIONS):
                middle = math.sqrt(left * right)
                if winner(middle)[0] == previous[1]:
                    left = middle
                else:
                    right = middle
            by_limit = winner(right)[1]
            found.append((right, previous[1], current, "limit" if by_limit else "price"))
        previous = (scale, current)
    return found
