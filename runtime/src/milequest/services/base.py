"""The base every service provider builds on: metrics, error mapping and health checks."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

from .errors import ServiceError
from .metrics import MetricsSink, MetricUnit, default_sink

if TYPE_CHECKING:
    # Imported where used: the health models need pydantic, which a cold start can skip.
    from .health import HealthState, HealthStatus

P = ParamSpec("P")
T = TypeVar("T")

logger = logging.getLogger("milequest.services")

# botocore error codes that mean "slow down"; the SDK has already retried them by the
# time they reach us (standard/adaptive retry mode), so they surface as RATE_LIMITED.
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "SlowDown",
    }
)
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "ForbiddenException",
    }
)


class BaseService(ABC):
    """Shared behaviour of every provider of every service.

    Public operations call :meth:`_run`, which times and counts the call into the metrics
    sink (dimensions ``Service``, ``Provider``, ``Operation``) and turns any exception that
    is not already a :class:`ServiceError` into the service's own error type.
    """

    service_name: ClassVar[str]
    provider_name: ClassVar[str]
    error_type: ClassVar[type[ServiceError]]
    error_codes: ClassVar[type[StrEnum]]

    def __init__(self, *, metrics: MetricsSink | None = None) -> None:
        self._metrics = metrics

    @property
    def metrics(self) -> MetricsSink:
        """Where this service's metrics go (the process-wide sink unless one was given)."""
        if self._metrics is None:
            self._metrics = default_sink()
        return self._metrics

    # -- metrics ---------------------------------------------------------------------------

    def record_metric(
        self, name: str, value: float, unit: MetricUnit = "Count", **dimensions: str
    ) -> None:
        """Record a custom metric with this service's ``Service`` and ``Provider`` dimensions."""
        dims = {"Service": self.service_name, "Provider": self.provider_name, **dimensions}
        try:
            self.metrics.put(name, value, unit, dims)
        except Exception:  # a metrics failure must never fail the operation it measures
            logger.warning("could not record metric %s", name, exc_info=True)

    # -- the one wrapper around every public operation ------------------------------------

    def _run(self, operation: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        start = time.perf_counter()
        failed = True
        try:
            result = fn(*args, **kwargs)
            failed = False
            return result
        except ServiceError as exc:
            logger.info("%s.%s failed: %s", self.service_name, operation, exc)
            raise
        except Exception as exc:
            mapped = self._map_error(exc)
            logger.warning("%s.%s failed: %s", self.service_name, operation, mapped, exc_info=True)
            raise mapped from exc
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            self.record_metric("Calls", 1, Operation=operation)
            self.record_metric("Errors", 1 if failed else 0, Operation=operation)
            self.record_metric("Latency", elapsed_ms, "Milliseconds", Operation=operation)

    # -- error mapping ---------------------------------------------------------------------

    def _error(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        cause: BaseException | None = None,
    ) -> ServiceError:
        """Build this service's error for the code named ``code`` (a member name)."""
        return self.error_type(
            self.error_codes[code],
            message,
            provider=self.provider_name,
            retryable=retryable,
            cause=cause,
        )

    def _translate_error(self, exc: Exception) -> ServiceError | None:
        """Provider hook: map a provider-specific exception, or return None for the default."""
        return None

    def _map_error(self, exc: Exception) -> ServiceError:
        mapped = self._translate_error(exc)
        if mapped is not None:
            return mapped
        return self._map_common_error(exc)

    def _map_common_error(self, exc: Exception) -> ServiceError:
        from botocore import exceptions as bexc

        if isinstance(exc, bexc.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            text = f"{code}: {err.get('Message', '')}".strip(": ")
            if code in _THROTTLING_CODES or status == 429:
                return self._error("RATE_LIMITED", text, retryable=True, cause=exc)
            if code in _AUTH_CODES or status in (401, 403):
                name = "UNAUTHORIZED" if "UNAUTHORIZED" in self.error_codes.__members__ else None
                return self._error(name or "CONFIGURATION", text, cause=exc)
            if status >= 500:
                return self._error("PROVIDER_UNAVAILABLE", text, retryable=True, cause=exc)
            return self._error("PROVIDER_ERROR", text, cause=exc)
        if isinstance(exc, bexc.NoCredentialsError | bexc.NoRegionError):
            return self._error("CONFIGURATION", f"AWS client configuration: {exc}", cause=exc)
        if isinstance(exc, bexc.HTTPClientError | bexc.ConnectionError | OSError):
            return self._error(
                "PROVIDER_UNAVAILABLE", f"{type(exc).__name__}: {exc}", retryable=True, cause=exc
            )
        return self._error("PROVIDER_ERROR", f"{type(exc).__name__}: {exc}", cause=exc)

    # -- health ----------------------------------------------------------------------------

    def health_check(self) -> HealthStatus:
        """Probe the provider; never raises (a failed probe is reported as unhealthy)."""
        from .health import HealthState, HealthStatus

        start = time.perf_counter()
        try:
            state, details = self._probe()
        except Exception as exc:
            error = exc if isinstance(exc, ServiceError) else self._map_error(exc)
            state, details = HealthState.UNHEALTHY, {"error": str(error)}
        latency_ms = round((time.perf_counter() - start) * 1000, 3)
        self.record_metric("Healthy", 1 if state is HealthState.HEALTHY else 0)
        return HealthStatus(
            status=state,
            service=self.service_name,
            provider=self.provider_name,
            latency_ms=latency_ms,
            details=details,
        )

    @abstractmethod
    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        """A cheap call proving the provider works; raise or return a state and details."""
