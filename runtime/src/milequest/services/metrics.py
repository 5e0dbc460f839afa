"""Metrics sinks: CloudWatch EMF (via Powertools), in-memory (tests) and no-op."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

MetricUnit = Literal["Count", "Milliseconds", "Seconds", "Bytes", "Percent", "None"]

DEFAULT_NAMESPACE = "MileQuest"


class MetricsSink(Protocol):
    """Where services put their metrics."""

    def put(self, name: str, value: float, unit: MetricUnit, dimensions: Mapping[str, str]) -> None:
        """Record one value of metric ``name`` with its dimensions."""


class NoopSink:
    """Discards every metric (the default outside Lambda)."""

    def put(self, name: str, value: float, unit: MetricUnit, dimensions: Mapping[str, str]) -> None:
        return None


@dataclass(frozen=True)
class MetricRecord:
    name: str
    value: float
    unit: MetricUnit
    dimensions: Mapping[str, str]


@dataclass
class InMemorySink:
    """Keeps every metric in ``records`` (thread-safe), for tests and the local stack."""

    records: list[MetricRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def put(self, name: str, value: float, unit: MetricUnit, dimensions: Mapping[str, str]) -> None:
        with self._lock:
            self.records.append(MetricRecord(name, value, unit, dict(dimensions)))

    def values(self, name: str, **dimensions: str) -> list[float]:
        """Values of ``name`` whose dimensions include ``dimensions``."""
        with self._lock:
            return [
                r.value
                for r in self.records
                if r.name == name and all(r.dimensions.get(k) == v for k, v in dimensions.items())
            ]

    def total(self, name: str, **dimensions: str) -> float:
        """The sum of :meth:`values`."""
        return sum(self.values(name, **dimensions))

    def clear(self) -> None:
        with self._lock:
            self.records.clear()


class EmfSink:
    """CloudWatch Embedded Metric Format through aws-lambda-powertools.

    Each metric is flushed at once with its own dimensions (``single_metric``), so no
    handler decorator is needed and dimensions never leak between operations.
    """

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        # Imported here so that importing a service does not pay for Powertools metrics.
        from aws_lambda_powertools.metrics import single_metric

        self._single_metric = single_metric
        self.namespace = namespace

    def put(self, name: str, value: float, unit: MetricUnit, dimensions: Mapping[str, str]) -> None:
        from aws_lambda_powertools.metrics import MetricUnit as PtUnit

        with self._single_metric(
            name=name, unit=PtUnit(unit), value=value, namespace=self.namespace
        ) as metric:
            for key, val in dimensions.items():
                metric.add_dimension(name=key, value=val)


_default_sink: MetricsSink | None = None
_sink_lock = threading.Lock()


def default_sink() -> MetricsSink:
    """The process-wide sink: EMF in Lambda (or ``METRICS_SINK=emf``), else no-op.

    ``METRICS_SINK`` accepts ``emf``, ``memory`` or ``none``; ``METRICS_NAMESPACE`` (or
    Powertools' ``POWERTOOLS_METRICS_NAMESPACE``) names the CloudWatch namespace.
    """
    global _default_sink
    with _sink_lock:
        if _default_sink is None:
            _default_sink = _sink_from_env()
        return _default_sink


def set_default_sink(sink: MetricsSink | None) -> None:
    """Replace the process-wide sink (``None`` re-reads the environment on next use)."""
    global _default_sink
    with _sink_lock:
        _default_sink = sink


def _sink_from_env() -> MetricsSink:
    choice = os.environ.get("METRICS_SINK", "").strip().lower()
    if not choice:
        choice = "emf" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "none"
    namespace = os.environ.get("METRICS_NAMESPACE") or os.environ.get(
        "POWERTOOLS_METRICS_NAMESPACE", DEFAULT_NAMESPACE
    )
    if choice == "emf":
        return EmfSink(namespace)
    if choice == "memory":
        return InMemorySink()
    return NoopSink()
