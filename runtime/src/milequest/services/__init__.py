"""Service foundation: errors, the base class, metrics, health and the registry."""

from .base import BaseService
from .errors import ServiceError
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
