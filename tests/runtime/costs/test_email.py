"""Email options against hand-computed figures: SES per 1,000, plans with overage."""

from __future__ import annotations

import pytest
from milequest.costs import PriceBook, UsageProfile
from milequest.costs.email import price_esp, price_ses

from .conftest import REGION, usd


@pytest.mark.parametrize(
    ("emails", "ips", "total"),
    [
        (0, 0, 0.0),
        (1_000, 0, 0.10),  # $0.10 per 1,000
        (2_500_000, 2, 250.00 + 2 * 24.95),  # plus $24.95 per dedicated IP and month
    ],
)
def test_ses(book: PriceBook, emails: float, ips: int, total: float) -> None:
    option = price_ses(UsageProfile(emails_per_month=emails, ses_dedicated_ips=ips), book, REGION)
    assert option.total_usd == pytest.approx(total)
    assert usd(option, "SES messages") == pytest.approx(emails * 0.10 / 1_000)


@pytest.mark.parametrize(
    ("emails", "plan", "price"),
    [
        (2_999, "Free", 0.0),
        (3_000, "Free", 0.0),  # 3,000 a month is exactly 100 a day
        (3_001, "Pro", 20.0),
        (50_000, "Pro", 20.0),
        (50_001, "Pro", 20.90),  # one bucket of 1,000 at $0.90
        (51_415, "Pro", 21.80),  # Resend's own worked example: two buckets
        (100_000, "Pro", 20 + 50 * 0.90),  # overage still beats Scale 100k ($90)
        (1_000_000, "Scale 1M", 650.0),
        (1_000_001, "Pro", 20 + 951 * 0.90),  # Scale 1M has no overage in the data
    ],
)
def test_resend(book: PriceBook, emails: float, plan: str, price: float) -> None:
    option = price_esp("resend", UsageProfile(emails_per_month=emails), book)
    assert option.plan == plan
    assert option.total_usd == pytest.approx(price)


@pytest.mark.parametrize(
    ("emails", "plan", "price"),
    [
        (0, "Essentials 50k", 19.95),  # no free plan: the trial is not a monthly option
        (49_999, "Essentials 50k", 19.95),
        (50_000, "Essentials 50k", 19.95),
        (50_001, "Essentials 50k", 19.95 + 0.00133),  # overage per email
        (60_000, "Essentials 50k", 19.95 + 10_000 * 0.00133),
        (100_000, "Essentials 100k", 34.95),
        (100_001, "Essentials 50k", 19.95 + 50_001 * 0.00133),
    ],
)
def test_sendgrid(book: PriceBook, emails: float, plan: str, price: float) -> None:
    option = price_esp("sendgrid", UsageProfile(emails_per_month=emails), book)
    assert option.plan == plan
    assert option.total_usd == pytest.approx(price)


def test_a_plan_without_overage_cannot_send_more(book: PriceBook) -> None:
    only_free = book.model_copy(update={"plans": tuple(p for p in book.plans if p.name == "Free")})
    option = price_esp("resend", UsageProfile(emails_per_month=3_001), only_free)
    assert option.total_usd is None
    assert option.plan is None
    assert "beyond the published plans" in option.notes[0]
