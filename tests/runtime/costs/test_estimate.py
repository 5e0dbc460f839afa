"""The estimate: all options, break-even points, refusals, and properties over any input."""

from __future__ import annotations

import math
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milequest.costs import CostError, CostErrorCode, PriceBook, StackOptions, estimate
from milequest.costs.estimate import pricers, scaled
from milequest.costs.profile import UsageProfile
from milequest.costs.results import Kind, OptionId

from .conftest import REGION

TODAY = date(2026, 11, 29)
IDLE = {"peak_connections": 1_000, "connection_minutes": 1_000 * 43_200}


def test_every_option_is_priced_in_the_chosen_region(book: PriceBook) -> None:
    result = estimate({**IDLE, "emails_per_month": 60_000}, book, today=TODAY)
    assert [o.option for o in result.options] == [
        "apigateway",
        "pusher",
        "ses",
        "resend",
        "sendgrid",
    ]
    assert result.region == REGION
    assert result.warnings == ()
    assert result.option("pusher").plan == "Pro"  # 1,000 connections: over Startup's 500
    cheapest_email = result.cheapest("email")
    assert cheapest_email is not None
    assert cheapest_email.option == "ses"


def test_stale_prices_warn_but_still_estimate(book: PriceBook) -> None:
    result = estimate(IDLE, book, today=date(2027, 6, 1))
    assert len(result.warnings) == 1
    assert "older than 6 months" in result.warnings[0]
    assert result.option("apigateway").total_usd is not None


def test_break_even_where_a_free_tier_ends(book: PriceBook) -> None:
    result = estimate({"emails_per_month": 60_000}, book, today=TODAY)
    (resend,) = [b for b in result.break_even if b.cheaper_below == "resend"]
    # Resend's free plan covers 3,000 emails; one more and SES ($0.30) is cheaper than Pro.
    assert resend.emails_per_month == pytest.approx(3_000, rel=1e-6)
    assert resend.cheaper_above == "ses"
    assert resend.reason == "price"
    assert resend.monthly_usd == pytest.approx(0.30, rel=1e-5)


def test_break_even_where_the_sandbox_ends_and_where_pusher_stops(book: PriceBook) -> None:
    points = estimate(IDLE, book, today=TODAY).break_even
    assert points[0].cheaper_below == "pusher"
    assert points[0].cheaper_above == "apigateway"
    # The Sandbox plan holds 100 connections; above, Startup ($49) costs more than ours.
    assert points[0].peak_connections == pytest.approx(100, rel=1e-6)
    last = points[-1]
    assert (last.cheaper_above, last.reason) == ("apigateway", "limit")
    assert last.peak_connections == pytest.approx(30_000, rel=1e-6)


def test_each_break_even_point_is_where_the_winner_changes(book: PriceBook) -> None:
    profile = UsageProfile(peak_connections=5_000, events_per_month=6e7, emails_per_month=200_000)
    result = estimate(profile, book, today=TODAY)
    price = pricers(result.stack, book, REGION)
    assert len(result.break_even) >= 3

    def total(option: OptionId, kind: Kind, scale: float) -> float:
        value = price[option](scaled(profile, kind, scale)).total_usd
        return math.inf if value is None else value

    for point in result.break_even:
        above, below = point.cheaper_above, point.cheaper_below
        before, at, after = (point.scale * f for f in (1 - 1e-6, 1, 1 + 1e-6))
        assert total(below, point.kind, before) <= total(above, point.kind, before)
        assert total(above, point.kind, at) <= total(below, point.kind, at)
        assert total(above, point.kind, after) < total(below, point.kind, after)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"peak_connections": -5}, "peak_connections"),
        ({"peak_connections": math.nan}, "peak_connections"),
        ({"events_per_month": math.inf}, "events_per_month"),
        ({"peak_connections": 1e9}, "peak_connections"),  # absurd
        ({"payload_bytes": 200_000}, "payload_bytes"),  # over API Gateway's 128 KB
        ({"session_minutes": 180}, "session_minutes"),  # over the 2 h limit
        ({"peak_connections": 10, "connection_minutes": 10 * 43_200 + 1}, "all month"),
        ({"peek_connections": 10}, "peek_connections"),
        ({"emails_per_month": "lots"}, "emails_per_month"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(data: dict[str, Any], field: str) -> None:
    with pytest.raises(CostError) as info:
        estimate(data)
    assert info.value.code is CostErrorCode.INVALID_PROFILE
    assert field in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_stack_options_and_regions_are_typed_errors() -> None:
    with pytest.raises(CostError) as stack:
        estimate({}, stack={"lambda_memory_mb": 64})
    assert stack.value.code is CostErrorCode.INVALID_PROFILE
    with pytest.raises(CostError) as region:
        estimate({}, region="eu-west-1")
    assert region.value.code is CostErrorCode.UNKNOWN_REGION
    with pytest.raises(CostError):
        estimate(["not", "a", "mapping"])  # type: ignore[arg-type]


_FIELDS = [*UsageProfile.model_fields, "bogus"]
_ANY_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=8),
    st.none(),
    st.booleans(),
)


@settings(max_examples=25)
@given(st.dictionaries(st.sampled_from(_FIELDS), _ANY_VALUE, max_size=6))
def test_property_estimate_raises_only_the_typed_error(data: dict[str, Any]) -> None:
    try:
        result = estimate(data, today=TODAY)
    except CostError as error:
        refused: CostError | None = error
    else:
        refused = None
    if refused is not None:
        assert refused.code is CostErrorCode.INVALID_PROFILE
        return
    for option in result.options:
        assert option.total_usd is None or (
            math.isfinite(option.total_usd) and option.total_usd >= 0
        )


_AMOUNT = st.floats(min_value=0, max_value=1e7, allow_nan=False)
_PROFILES = st.builds(
    UsageProfile,
    peak_connections=_AMOUNT,
    events_per_month=st.floats(min_value=0, max_value=1e10),
    subscribers_per_event=st.floats(min_value=0, max_value=5_000),
    client_events_per_month=st.floats(min_value=0, max_value=1e9),
    presence_joins_per_month=st.floats(min_value=0, max_value=1e8),
    subscriptions_per_connection=st.floats(min_value=0, max_value=20),
    payload_bytes=st.integers(min_value=1, max_value=128 * 1024),
    emails_per_month=st.floats(min_value=0, max_value=1e9),
    ses_dedicated_ips=st.integers(min_value=0, max_value=10),
)
_STACKS = st.builds(
    StackOptions,
    authorizer=st.booleans(),
    sharded_fanout=st.booleans(),
    publish_via_lambda=st.booleans(),
    architecture=st.sampled_from(["arm64", "x86_64"]),
)


@given(
    _PROFILES,
    _STACKS,
    st.floats(min_value=0, max_value=100),
    st.floats(min_value=0, max_value=100),
)
def test_property_every_option_is_monotonic_in_scale(
    book: PriceBook, profile: UsageProfile, stack: StackOptions, s: float, t: float
) -> None:
    low, high = sorted((s, t))
    price = pricers(stack, book, REGION)
    for option, fn in price.items():
        kind: Kind = "realtime" if option in ("apigateway", "pusher") else "email"
        a = fn(scaled(profile, kind, low)).total_usd
        b = fn(scaled(profile, kind, high)).total_usd
        a_, b_ = (math.inf if x is None else x for x in (a, b))
        # Up to float rounding: the received rate (deliveries per connection-minute) that sets
        # the pings is a ratio of two scaled figures.
        assert a_ <= b_ * (1 + 1e-12), (option, low, high, a, b)
