"""Providers side by side: dashboard figures from the runtime's service metrics, and the
metric math of the migration alarms.

The runtime records its metrics as EMF in the ``MileQuest`` namespace
(``milequest.services.metrics``). Each one carries ``Service`` and ``Provider``, the calls of
public methods also ``Operation``, and Powertools' ``single_metric`` adds ``service``: the
emitting process's ``POWERTOOLS_SERVICE_NAME``. CloudWatch tells metrics apart by their whole
dimension set, so every metric here names each dimension, and a figure per provider adds up
the processes (``service`` values) that emit it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from milequest.services.metrics import DEFAULT_NAMESPACE

from .config import EnvironmentConfig
from .email import EVENTS_PROCESS_NAME
from .realtime import FANOUT_PROCESS_NAME
from .realtime import PROCESS_NAME as WEBSOCKET_PROCESS_NAME
from .web import PROCESS_NAME as WEB_PROCESS_NAME

__all__ = [
    "CALL_DIMENSIONS",
    "EVENT_DIMENSIONS",
    "PROVIDER_DIMENSIONS",
    "ProviderFigures",
]

PERIOD = Duration.minutes(5)
# The dimension names the runtime emits, by kind of metric.
CALL_DIMENSIONS = ("Service", "Provider", "Operation", "service")  # Calls, Errors, Latency
PROVIDER_DIMENSIONS = ("Service", "Provider", "service")  # Deliveries, GoneConnections
EVENT_DIMENSIONS = ("Service", "Provider", "EventType", "service")  # SesEvents (+ BounceType)
# An alarm's metric math may read at most 10 metrics.
ALARM_METRIC_LIMIT = 10
# Below this many calls in a period a side's error rate is noise (one failure of three).
ALARM_MIN_CALLS = 20
# Providers whose events the runtime turns into metrics: SES's as SesEvents (SNS to the
# SES event handler), the others' as EmailEvents (signed webhooks to the HTTP app).
WEBHOOK_EVENT_PROVIDERS = ("resend", "sendgrid")


@dataclass(frozen=True)
class CallFamily:
    """Public-method calls of one service: which operations, run by which processes."""

    service: str
    operations: tuple[str, ...]
    sources: tuple[str, ...]

    def metrics(self, name: str, provider: str, statistic: str = "Sum") -> list[cloudwatch.Metric]:
        """``name`` for each operation and process, labelled ``<provider> <op> (<process>)``."""
        return [
            _metric(
                name,
                {"Service": self.service, "Provider": provider, "Operation": op, "service": src},
                statistic,
                label=f"{provider} {op} ({src})",
            )
            for op in self.operations
            for src in self.sources
        ]


def _metric(
    name: str, dimensions: dict[str, str], statistic: str = "Sum", label: str | None = None
) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=DEFAULT_NAMESPACE,
        metric_name=name,
        dimensions_map=dimensions,
        statistic=statistic,
        period=PERIOD,
        label=label,
    )


def _total(prefix: str, metrics: Sequence[cloudwatch.IMetric], label: str) -> cloudwatch.IMetric:
    """The sum of ``metrics`` (a missing one counts 0); their ids are ``<prefix>_<n>``."""
    using = {f"{prefix}_{index}": metric for index, metric in enumerate(metrics)}
    return cloudwatch.MathExpression(
        expression=" + ".join(f"FILL({metric_id}, 0)" for metric_id in using),
        using_metrics=using,
        label=label,
        period=PERIOD,
    )


def _totals(family: CallFamily, provider: str, tag: str) -> dict[str, cloudwatch.IMetric]:
    """``<tag>c``: ``provider``'s calls, ``<tag>e``: its errors, over the family."""
    return {
        f"{tag}c": _total(f"c{tag}", family.metrics("Calls", provider), "calls"),
        f"{tag}e": _total(f"e{tag}", family.metrics("Errors", provider), "errors"),
    }


def _math(expression: str, label: str, **using: cloudwatch.IMetric) -> cloudwatch.MathExpression:
    return cloudwatch.MathExpression(
        expression=expression, using_metrics=using, label=label, period=PERIOD
    )


def _graph(
    title: str,
    left: Iterable[cloudwatch.IMetric],
    annotations: Sequence[cloudwatch.HorizontalAnnotation] = (),
) -> cloudwatch.IWidget:
    return cloudwatch.GraphWidget(
        title=title,
        left=list(left),
        left_annotations=list(annotations),
        period=PERIOD,
        width=6,
        height=6,
    )


class ProviderFigures:
    """A stage's providers side by side: the email and WebSocket figures per provider.

    The providers are the configured ones (``email_provider``, ``websocket_provider``) and,
    during a migration, the secondaries (``migration``).
    """

    def __init__(self, config: EnvironmentConfig) -> None:
        self.config = config
        migration = config.migration
        self.email_providers = _present(config.email_provider, migration.email_secondary_provider)
        self.websocket_providers = _present(
            config.websocket_provider, migration.websocket_secondary_provider
        )
        app = config.application_service_name
        # The application sends mail; it and the HTTP app (Pusher's HTTP API) trigger events.
        self.sends = CallFamily(
            "email", ("send_email", "send_templated_email", "send_bulk_batch"), (app,)
        )
        self.triggers = CallFamily(
            "websocket", ("trigger", "trigger_batch", "send_to_user"), (app, WEB_PROCESS_NAME)
        )
        # Deliveries: inline by those, in shards by the fan-out workers.
        self.delivery_sources = (app, WEB_PROCESS_NAME, FANOUT_PROCESS_NAME)
        # The alarms' share of those, within an alarm's 10 metrics (docs/operations.md).
        self.alarm_sends = CallFamily("email", ("send_email", "send_templated_email"), (app,))
        self.alarm_triggers = CallFamily("websocket", ("trigger",), (app, WEB_PROCESS_NAME))

    # Figures ---------------------------------------------------------------------------------

    def _succeeded(self, family: CallFamily, provider: str, tag: str) -> cloudwatch.IMetric:
        """Calls of ``provider`` that did not fail."""
        return _math(f"{tag}c - {tag}e", provider, **_totals(family, provider, tag))

    def _error_rate(self, family: CallFamily, provider: str, tag: str) -> cloudwatch.IMetric:
        """Errors per 100 calls of ``provider``."""
        return _math(f"100 * {tag}e / {tag}c", provider, **_totals(family, provider, tag))

    def _latency(self, family: CallFamily, provider: str) -> list[cloudwatch.Metric]:
        """p99 per operation and process (percentiles do not add up)."""
        return family.metrics("Latency", provider, "p99")

    def _email_event(self, provider: str, event_type: str) -> cloudwatch.Metric | None:
        """Hard bounces (``bounce``) or complaints reported for ``provider``'s mail.

        The ``Provider`` dimension is the receiving process's own provider
        (``email_provider``); the event's provider is the metric (SES) or ``EventSource``.
        """
        dims = {"Service": "email", "Provider": self.config.email_provider, "EventType": event_type}
        if event_type == "bounce":
            dims["BounceType"] = "Permanent"
        if provider == "ses":
            return _metric("SesEvents", dims | {"service": EVENTS_PROCESS_NAME})
        if provider in WEBHOOK_EVENT_PROVIDERS:
            return _metric(
                "EmailEvents", dims | {"EventSource": provider, "service": WEB_PROCESS_NAME}
            )
        return None

    def _delivery_metrics(self, name: str, provider: str) -> list[cloudwatch.Metric]:
        """``Deliveries`` or ``GoneConnections`` (410s): only API Gateway counts them."""
        return [
            _metric(name, {"Service": "websocket", "Provider": provider, "service": source})
            for source in self.delivery_sources
        ]

    # Dashboard ------------------------------------------------------------------------------

    def widgets(self) -> list[list[cloudwatch.IWidget]]:
        """Rows of the dashboard's provider section."""
        return [[self._header()], self._email_row(), self._websocket_row()]

    def _header(self) -> cloudwatch.IWidget:
        config = self.config
        return cloudwatch.TextWidget(
            markdown=(
                "## Providers side by side\n"
                f"Email: {', '.join(self.email_providers)}. "
                f"WebSocket: {', '.join(self.websocket_providers)}. "
                "Sends and triggers count the application's processes "
                f"(`POWERTOOLS_SERVICE_NAME={config.application_service_name}`) and the HTTP "
                "app; see docs/operations.md before moving the next share of traffic."
            ),
            width=24,
            height=2,
        )

    def _email_row(self) -> list[cloudwatch.IWidget]:
        providers = list(enumerate(self.email_providers))
        rates: list[cloudwatch.IMetric] = []
        for index, provider in providers:
            for event_type in ("bounce", "complaint"):
                event = self._email_event(provider, event_type)
                if event is not None:
                    tag = f"{event_type[0]}{index}"
                    sent = self._succeeded(self.sends, provider, tag)
                    rates.append(
                        _math(
                            f"100 * FILL({tag}n, 0) / {tag}d",
                            f"{provider} {event_type}s",
                            **{f"{tag}n": event, f"{tag}d": sent},
                        )
                    )
        return [
            _graph(
                "Email: accepted sends",
                [self._succeeded(self.sends, p, f"a{i}") for i, p in providers],
            ),
            _graph(
                "Email: send error rate (%)",
                [self._error_rate(self.sends, p, f"x{i}") for i, p in providers],
            ),
            _graph(
                "Email: send latency (p99, ms)",
                [m for _, p in providers for m in self._latency(self.sends, p)],
            ),
            _graph(
                "Email: hard bounce and complaint rates (%)",
                rates,
                [
                    cloudwatch.HorizontalAnnotation(value=5, label="bounce review 5%"),
                    cloudwatch.HorizontalAnnotation(value=0.1, label="complaint review 0.1%"),
                ],
            ),
        ]

    def _websocket_row(self) -> list[cloudwatch.IWidget]:
        providers = list(enumerate(self.websocket_providers))
        deliveries: list[cloudwatch.IMetric] = []
        for index, provider in providers:
            for name, tag, label in (
                ("Deliveries", "d", "deliveries"),
                ("GoneConnections", "g", "410 gone"),
            ):
                deliveries.append(
                    _total(
                        f"{tag}{index}",
                        self._delivery_metrics(name, provider),
                        f"{provider} {label}",
                    )
                )
        connections = [
            _metric(
                "Calls",
                {
                    "Service": "websocket",
                    "Provider": provider,
                    "Operation": "connect",
                    "service": WEBSOCKET_PROCESS_NAME,
                },
                label=f"{provider} connections opened",
            )
            for provider in self.websocket_providers
            if provider == "apigateway"  # Pusher counts its connections in its own dashboard
        ]
        return [
            _graph(
                "WebSocket: events triggered",
                [self._succeeded(self.triggers, p, f"t{i}") for i, p in providers],
            ),
            _graph(
                "WebSocket: trigger error rate (%)",
                [self._error_rate(self.triggers, p, f"y{i}") for i, p in providers],
            ),
            _graph(
                "WebSocket: deliveries and 410s (API Gateway counts them)",
                deliveries,
            ),
            _graph("WebSocket: connections opened", connections),
        ]

    # Alarms -------------------------------------------------------------------------------

    def migration_alarms(self) -> list[tuple[str, str, cloudwatch.MathExpression]]:
        """(id, description, metric) of each service with a secondary provider: the
        secondary's error rate minus the primary's, each taken as 0 below
        ``ALARM_MIN_CALLS`` calls in a period."""
        config = self.config
        alarms = []
        for construct_id, family, primary, secondary in (
            (
                "EmailSecondaryErrorRate",
                self.alarm_sends,
                config.email_provider,
                config.migration.email_secondary_provider,
            ),
            (
                "WebSocketSecondaryErrorRate",
                self.alarm_triggers,
                config.websocket_provider,
                config.migration.websocket_secondary_provider,
            ),
        ):
            if secondary is None:
                continue
            using = _totals(family, secondary, "s") | _totals(family, primary, "p")
            count = 4 * len(family.operations) * len(family.sources)
            if count > ALARM_METRIC_LIMIT:
                raise ValueError(f"{construct_id} would read {count} metrics (at most 10)")
            rate = f"IF({{0}}c >= {ALARM_MIN_CALLS}, {{0}}e / {{0}}c, 0)"
            alarms.append(
                (
                    construct_id,
                    f"{family.service}: {secondary}'s error rate exceeds {primary}'s by more "
                    f"than {config.migration.error_rate_margin:.1%}",
                    _math(
                        f"{rate.format('s')} - {rate.format('p')}",
                        f"{secondary} minus {primary} error rate",
                        **using,
                    ),
                )
            )
        return alarms


def _present(*providers: str | None) -> tuple[str, ...]:
    return tuple(provider for provider in providers if provider is not None)
