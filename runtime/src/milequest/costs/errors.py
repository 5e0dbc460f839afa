"""The cost model's error type and codes."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar

from milequest.services.errors import COMMON_HINTS, ServiceError


class CostErrorCode(StrEnum):
    """Why an estimate could not be made (includes every ``CommonErrorCode`` by value)."""

    INVALID_PROFILE = "INVALID_PROFILE"
    INVALID_PRICES = "INVALID_PRICES"
    UNKNOWN_REGION = "UNKNOWN_REGION"
    METRICS_UNAVAILABLE = "METRICS_UNAVAILABLE"
    CONFIGURATION = "CONFIGURATION"
    RATE_LIMITED = "RATE_LIMITED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_ERROR = "PROVIDER_ERROR"


_HINTS: dict[str, str] = {
    "INVALID_PROFILE": "Give non-negative, finite usage figures within the stated limits.",
    "INVALID_PRICES": "Fix the price data file: every figure needs a value, source and date.",
    "UNKNOWN_REGION": "Use a region the price data file lists, or add that region's figures.",
    "METRICS_UNAVAILABLE": "Check the environment name, region and API id, and that the "
    "stage has sent metrics in the window.",
}


class CostError(ServiceError):
    """Raised by every cost-model function; ``code`` is a :class:`CostErrorCode`."""

    code: CostErrorCode
    hints: ClassVar[Mapping[str, str]] = {**COMMON_HINTS, **_HINTS}


def cost_error(code: str, message: str, *, cause: BaseException | None = None) -> CostError:
    """A :class:`CostError` for the code named ``code``."""
    retryable = code in ("RATE_LIMITED", "PROVIDER_UNAVAILABLE")
    return CostError(CostErrorCode[code], message, retryable=retryable, cause=cause)
