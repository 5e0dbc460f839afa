"""Typed per-environment settings for the CDK app, defined in code.

Each environment (``dev``, ``staging``, ``prod``) is one ``EnvironmentConfig``. The account
and region fall back to ``CDK_DEFAULT_ACCOUNT`` / ``CDK_DEFAULT_REGION`` (what the CDK CLI
resolves from the caller's credentials); with neither, stacks synthesize
environment-agnostic, which keeps ``cdk synth`` working offline.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from aws_cdk import Environment, RemovalPolicy
from aws_cdk import aws_logs as logs
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

# CloudWatch Logs accepts only these retention periods (days).
_RETENTION_DAYS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def _domain_name(value: str) -> str:
    value = value.rstrip(".").lower()
    if not _DOMAIN.match(value):
        raise ValueError(f"not a domain name: {value!r}")
    return value


# Lower case, without the trailing dot.
DomainName = Annotated[str, AfterValidator(_domain_name)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostedZoneConfig(_Model):
    """A public Route 53 hosted zone referenced by id (no lookup, so synth stays offline)."""

    zone_id: str = Field(pattern=r"^Z[A-Z0-9]{4,32}$")
    zone_name: DomainName


class WebSocketThrottle(_Model):
    """Stage-wide API Gateway throttling for the WebSocket routes."""

    rate_limit: float = Field(default=100.0, gt=0)
    burst_limit: int = Field(default=200, gt=0)


class ContainerConfig(_Model):
    """The Fargate service running the runtime's HTTP app."""

    enabled: bool = False
    # With a hosted zone, the app is served over HTTPS at <subdomain>.<domain>.
    subdomain: str = Field(default="api", pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    cpu: Literal[256, 512, 1024, 2048, 4096] = 256
    memory_mib: int = Field(default=512, ge=512, le=30720)
    desired_count: int = Field(default=2, ge=1, le=20)
    max_azs: int = Field(default=2, ge=2, le=3)


class EnvironmentConfig(_Model):
    """Everything that differs between dev, staging and prod."""

    name: Literal["dev", "staging", "prod"]
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")

    # Email
    domain: DomainName
    mail_from_subdomain: str = Field(default="mail", pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    from_address: EmailStr
    sender_addresses: tuple[EmailStr, ...] = ()
    ses_sandbox: bool = True
    email_provider: Literal["ses", "smtp", "mock"] = "ses"
    hosted_zone: HostedZoneConfig | None = None

    # Realtime
    websocket_provider: Literal["apigateway", "pusher"] = "apigateway"
    websocket_stage_name: str = Field(default="live", pattern=r"^[A-Za-z0-9_]{1,128}$")
    websocket_throttle: WebSocketThrottle = WebSocketThrottle()
    pusher_cluster: str = "eu"
    # Where the API Gateway handlers post Pusher-format webhooks (presence, occupancy).
    websocket_webhook_url: HttpUrl | None = None
    # AWS::ApiGateway::Account is one per account and region: WebSocket stage logging
    # needs its CloudWatch role. Turn off where another stack already manages it.
    manage_apigateway_account_role: bool = True

    # Operations
    alarm_email: EmailStr | None = None
    log_retention_days: int = 30
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    removal_policy: Literal["destroy", "retain"] = "retain"
    reserved_concurrency: int | None = Field(default=None, ge=1)
    container: ContainerConfig = ContainerConfig()

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in _RETENTION_DAYS:
            raise ValueError(f"CloudWatch Logs accepts only {sorted(_RETENTION_DAYS)} days")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentConfig:
        if self.from_address.rsplit("@", 1)[1].lower() != self.domain:
            raise ValueError(f"from_address must be an address at {self.domain}")
        zone = self.hosted_zone
        if zone is not None and not (
            self.domain == zone.zone_name or self.domain.endswith("." + zone.zone_name)
        ):
            raise ValueError(f"domain {self.domain} is not inside hosted zone {zone.zone_name}")
        return self

    # Derived values -------------------------------------------------------------------

    @property
    def mail_from_domain(self) -> str:
        return f"{self.mail_from_subdomain}.{self.domain}"

    @property
    def cdk_environment(self) -> Environment:
        return Environment(
            account=self.account or os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=self.region or os.environ.get("CDK_DEFAULT_REGION"),
        )

    @property
    def log_retention(self) -> logs.RetentionDays:
        return _RETENTION_DAYS[self.log_retention_days]

    @property
    def cdk_removal_policy(self) -> RemovalPolicy:
        return RemovalPolicy.DESTROY if self.removal_policy == "destroy" else RemovalPolicy.RETAIN

    @property
    def resource_prefix(self) -> str:
        return f"milequest-{self.name}"


ENVIRONMENTS: dict[str, EnvironmentConfig] = {
    cfg.name: cfg
    for cfg in (
        EnvironmentConfig(
            name="dev",
            domain="dev.milequest.app",
            from_address="no-reply@dev.milequest.app",
            sender_addresses=("team@dev.milequest.app",),
            ses_sandbox=True,
            log_retention_days=14,
            log_level="DEBUG",
            removal_policy="destroy",
            websocket_throttle=WebSocketThrottle(rate_limit=20, burst_limit=40),
        ),
        EnvironmentConfig(
            name="staging",
            domain="staging.milequest.app",
            from_address="no-reply@staging.milequest.app",
            sender_addresses=("team@staging.milequest.app",),
            ses_sandbox=True,
            alarm_email="ops@milequest.app",
            log_retention_days=30,
            removal_policy="destroy",
            reserved_concurrency=20,
            websocket_throttle=WebSocketThrottle(rate_limit=50, burst_limit=100),
        ),
        EnvironmentConfig(
            name="prod",
            domain="milequest.app",
            from_address="no-reply@milequest.app",
            ses_sandbox=False,
            alarm_email="ops@milequest.app",
            log_retention_days=365,
            removal_policy="retain",
            reserved_concurrency=100,
            websocket_throttle=WebSocketThrottle(rate_limit=500, burst_limit=1000),
            container=ContainerConfig(enabled=True, cpu=512, memory_mib=1024, desired_count=2),
        ),
    )
}


def environment_configs() -> list[EnvironmentConfig]:
    """The configured environments, in promotion order."""
    return [ENVIRONMENTS[name] for name in ("dev", "staging", "prod")]


__all__ = [
    "ENVIRONMENTS",
    "ContainerConfig",
    "DomainName",
    "EnvironmentConfig",
    "HostedZoneConfig",
    "WebSocketThrottle",
    "environment_configs",
]
