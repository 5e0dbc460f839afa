"""Service foundation: errors, the base class, metrics, health and the registry.

Names are resolved on first use (PEP 562): importing a service package stays cheap at cold
start, and pydantic (health models) loads only when a health check runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ServiceError
from .lazy import lazy_attribute

if TYPE_CHECKING:
    from .base import BaseService
    from .health import HealthReport, HealthState, HealthStatus
    from .metrics import EmfSink, InMemorySink, MetricsSink, NoopSink, set_default_sink
    from .registry import (
        check_services_health,
        get_service,
        initialize_services,
        override_service,
        register_service,
        reset_services,
    )

_LAZY = {
    "BaseService": "base",
    "EmfSink": "metrics",
    "HealthReport": "health",
    "HealthState": "health",
    "HealthStatus": "health",
    "InMemorySink": "metrics",
    "MetricsSink": "metrics",
    "NoopSink": "metrics",
    "set_default_sink": "metrics",
    "check_services_health": "registry",
    "get_service": "registry",
    "initialize_services": "registry",
    "override_service": "registry",
    "register_service": "registry",
    "reset_services": "registry",
}

__all__ = [
    "BaseService",
    "EmfSink",
    "HealthReport",
    "HealthState",
    "HealthStatus",
    "InMemorySink",
    "MetricsSink",
    "NoopSink",
    "ServiceError",
    "check_services_health",
    "get_service",
    "initialize_services",
    "override_service",
    "register_service",
    "reset_services",
    "set_default_sink",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


def __dir__() -> list[str]:
    return sorted(__all__)
