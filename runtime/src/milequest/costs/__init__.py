"""Migration economics: what each realtime and email option costs for a usage profile.

``estimate(profile)`` prices API Gateway with our stack against Pusher Channels, and SES
against Resend and SendGrid, from the dated price data packaged here; ``python -m
milequest.costs`` prints the table, plots it and reads live usage from CloudWatch.
"""

from __future__ import annotations

from .errors import CostError, CostErrorCode
from .estimate import BreakEven, Estimate, estimate
from .prices import PriceBook, load_prices
from .profile import HandlerTimes, StackOptions, UsageProfile, usage_profile
from .results import LineItem, OptionCost

__all__ = [
    "BreakEven",
    "CostError",
    "CostErrorCode",
    "Estimate",
    "HandlerTimes",
    "LineItem",
    "OptionCost",
    "PriceBook",
    "StackOptions",
    "UsageProfile",
    "estimate",
    "load_prices",
    "usage_profile",
]
