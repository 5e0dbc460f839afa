"""The price data: a dated JSON file in this package, one record per published figure.

Every figure carries its region, the page that publishes it (``source``), the page it was
read from (``seen_at``) and the date it was checked. No price is written in code: the model
and the dashboard widgets read them from here.
"""

from __future__ import annotations

import calendar
import functools
import json
import math
from collections.abc import Iterable
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import cost_error

STALE_AFTER_MONTHS = 6
GLOBAL_REGION = "global"
_PACKAGED = "prices.json"

PlanService = Literal["pusher", "resend", "sendgrid"]


class _Figure(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    region: str = Field(min_length=1)
    source: str = Field(pattern=r"^https://")
    seen_at: str = Field(pattern=r"^https://")
    date: date
    note: str = ""


class UnitPrice(_Figure):
    """``usd`` per ``per`` units of ``key``, for usage up to ``tier_up_to`` units a month."""

    key: str = Field(min_length=1)
    usd: float = Field(ge=0)
    per: float = Field(gt=0)
    tier_up_to: float | None = Field(default=None, gt=0)


class Plan(_Figure):
    """A subscription tier: a monthly price and the limits it includes."""

    service: PlanService
    name: str = Field(min_length=1)
    usd_month: float = Field(ge=0)
    max_connections: float | None = Field(default=None, ge=0)
    max_messages_per_day: float | None = Field(default=None, ge=0)
    max_messages_per_month: float | None = Field(default=None, ge=0)
    # Beyond ``max_messages_per_month``: this much per 1,000, billed in blocks of
    # ``overage_block`` messages (1: per message). None: the plan has no overage.
    overage_usd_per_1000: float | None = Field(default=None, ge=0)
    overage_block: int = Field(default=1000, ge=1)


class PriceBook(BaseModel):
    """Every figure of the data file, checked for consistency when loaded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: Literal["USD"]
    default_region: str
    unit_prices: tuple[UnitPrice, ...]
    plans: tuple[Plan, ...]

    @model_validator(mode="after")
    def _consistent(self) -> PriceBook:
        groups: dict[tuple[str, str], list[UnitPrice]] = {}
        for price in self.unit_prices:
            groups.setdefault((price.key, price.region), []).append(price)
        for (key, region), tiers in groups.items():
            caps = [t.tier_up_to for t in tiers]
            bounded = [c for c in caps[:-1] if c is not None]
            if caps[-1] is not None or len(bounded) != len(caps) - 1:
                raise ValueError(f"{key} ({region}): only the last tier may be unbounded")
            if bounded != sorted(set(bounded)):
                raise ValueError(f"{key} ({region}): tiers must rise strictly")
        for plan in self.plans:
            if plan.service == "pusher" and None in (
                plan.max_connections,
                plan.max_messages_per_day,
            ):
                raise ValueError(f"pusher plan {plan.name}: give both of its limits")
        if self.default_region not in self.regions():
            raise ValueError(f"default_region {self.default_region!r} has no figures")
        return self

    def regions(self) -> set[str]:
        """Regions with unit prices (plans are ``global``)."""
        return {p.region for p in self.unit_prices}

    def resolve_region(self, region: str | None) -> str:
        """``region`` if the book prices it (``None``: the default), else ``UNKNOWN_REGION``."""
        chosen = region or self.default_region
        if chosen not in self.regions():
            have = ", ".join(sorted(self.regions()))
            raise cost_error("UNKNOWN_REGION", f"no prices for region {chosen!r} (have: {have})")
        return chosen

    def tiers(self, key: str, region: str) -> tuple[UnitPrice, ...]:
        """The graduated tiers of ``key`` in ``region``, lowest first."""
        found = tuple(p for p in self.unit_prices if p.key == key and p.region == region)
        if not found:
            raise cost_error("INVALID_PRICES", f"the price data has no {key!r} for {region}")
        return found

    def rate(self, key: str, region: str) -> float:
        """The first-tier price of one unit of ``key`` (for flat-rate use such as widgets)."""
        first = self.tiers(key, region)[0]
        return first.usd / first.per

    def cost(self, key: str, region: str, quantity: float) -> float:
        """What ``quantity`` units of ``key`` cost in a month, tier by tier."""
        return graduated(quantity, self.tiers(key, region))

    def plans_for(self, service: PlanService) -> tuple[Plan, ...]:
        """The plans of one subscription service, in data-file order."""
        return tuple(p for p in self.plans if p.service == service)

    def oldest(self) -> date:
        """The date of the oldest figure."""
        return min(f.date for f in (*self.unit_prices, *self.plans))

    def staleness_warning(self, today: date) -> str | None:
        """A warning when the oldest figure was checked more than six months before ``today``."""
        oldest = self.oldest()
        if today < _add_months(oldest, STALE_AFTER_MONTHS):
            return None
        return (
            f"price data is older than {STALE_AFTER_MONTHS} months (oldest figure checked "
            f"{oldest.isoformat()}): check the sources and update the data file"
        )


def graduated(quantity: float, tiers: Iterable[UnitPrice]) -> float:
    """The price of ``quantity`` units under graduated tiers (each tier prices its own slice)."""
    total, floor = 0.0, 0.0
    for tier in tiers:
        cap = math.inf if tier.tier_up_to is None else tier.tier_up_to
        if quantity > floor:
            total += (min(quantity, cap) - floor) * tier.usd / tier.per
        floor = cap
    return total


def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def load_prices(path: str | Path | None = None) -> PriceBook:
    """The price book from ``path``, or the data file packaged with this module.

    Raises ``CostError(INVALID_PRICES)`` when the file is missing, not JSON or inconsistent.
    """
    if path is None:
        return _packaged()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise cost_error("INVALID_PRICES", f"cannot read {path}: {exc}", cause=exc) from exc
    return _parse(text, str(path))


@functools.cache
def _packaged() -> PriceBook:
    text = resources.files("milequest.costs").joinpath(_PACKAGED).read_text(encoding="utf-8")
    return _parse(text, _PACKAGED)


def _parse(text: str, name: str) -> PriceBook:
    try:
        return PriceBook.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        detail = one_line(exc)
        raise cost_error("INVALID_PRICES", f"{name}: {detail}", cause=exc) from exc


def one_line(exc: Exception) -> str:
    """A validation error as one line: ``field: message; field: message``."""
    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"]) or "input"
            parts.append(f"{where}: {error['msg']}")
        return "; ".join(parts)
    return " ".join(str(exc).split())
