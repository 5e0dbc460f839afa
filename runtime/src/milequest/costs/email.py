"""Email options: SES per message (plus dedicated IPs), and the plans of Resend and SendGrid."""

from __future__ import annotations

import math
from typing import Literal

from .prices import Plan, PriceBook
from .profile import DAYS_PER_MONTH, UsageProfile
from .results import LineItem, OptionCost


def price_ses(profile: UsageProfile, book: PriceBook, region: str) -> OptionCost:
    """SES: a price per 1,000 messages and a monthly price per dedicated IP."""
    emails, ips = profile.emails_per_month, profile.ses_dedicated_ips
    items = [
        LineItem(
            name="SES messages",
            quantity=emails,
            unit="emails",
            usd=book.cost("ses.outbound_messages", region, emails),
        )
    ]
    if ips:
        items.append(
            LineItem(
                name="SES dedicated IPs",
                quantity=ips,
                unit="IPs",
                usd=book.cost("ses.dedicated_ip.month", region, ips),
            )
        )
    return OptionCost(
        option="ses", kind="email", items=tuple(items), total_usd=sum(i.usd for i in items)
    )


def plan_price(plan: Plan, emails: float) -> float | None:
    """What ``plan`` costs for ``emails`` a month, or None when it cannot send them."""
    per_day = plan.max_messages_per_day
    if per_day is not None and emails / DAYS_PER_MONTH > per_day:
        return None
    included = math.inf if plan.max_messages_per_month is None else plan.max_messages_per_month
    if emails <= included:
        return plan.usd_month
    if plan.overage_usd_per_1000 is None:
        return None
    blocks = math.ceil((emails - included) / plan.overage_block)
    return plan.usd_month + blocks * plan.overage_block * plan.overage_usd_per_1000 / 1000


def price_esp(
    service: Literal["resend", "sendgrid"], profile: UsageProfile, book: PriceBook
) -> OptionCost:
    """The cheapest plan of ``service`` for the profile's volume."""
    emails = profile.emails_per_month
    priced = [
        (price, plan)
        for plan in book.plans_for(service)
        if (price := plan_price(plan, emails)) is not None
    ]
    if not priced:
        return OptionCost(
            option=service,
            kind="email",
            total_usd=None,
            notes=(f"{emails:,.0f} emails a month: beyond the published plans (by quote)",),
        )
    price, plan = min(priced, key=lambda pair: pair[0])
    included = plan.max_messages_per_month or 0
    item = LineItem(
        name=f"plan {plan.name}",
        quantity=emails,
        unit="emails",
        usd=price,
        detail=f"{included:,.0f} included" + (", plus overage" if emails > included else ""),
    )
    return OptionCost(option=service, kind="email", plan=plan.name, items=(item,), total_usd=price)
