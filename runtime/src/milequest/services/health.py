"""Health-check result models."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class HealthState(StrEnum):
    """A service's health, from best to worst."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        """0 for healthy up to 2 for unhealthy: the worst state has the highest rank."""
        return _RANK[self]


_RANK = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNHEALTHY: 2}


class HealthStatus(BaseModel):
    """One service's health: its state, how long the probe took, and what it found."""

    status: HealthState
    service: str
    provider: str
    latency_ms: float
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """Whether the status is ``healthy``."""
        return self.status is HealthState.HEALTHY


class HealthReport(BaseModel):
    """The registry's aggregated report: the worst state wins."""

    status: HealthState
    checked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    services: dict[str, HealthStatus]
