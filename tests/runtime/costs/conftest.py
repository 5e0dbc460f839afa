"""Helpers for the cost-model tests: the packaged prices and line-item lookup."""

from __future__ import annotations

import pytest
from milequest.costs import OptionCost, PriceBook, load_prices

REGION = "us-east-1"


@pytest.fixture(scope="session")
def book() -> PriceBook:
    return load_prices()


def usd(option: OptionCost, name: str) -> float:
    """The dollars of the line item ``name``."""
    (item,) = [i for i in option.items if i.name == name]
    return item.usd


def quantity(option: OptionCost, name: str) -> float:
    (item,) = [i for i in option.items if i.name == name]
    return item.quantity
