"""Typed per-environment settings for the CDK app, defined in code.

Each environment (``dev``, ``staging``, ``prod``) is one ``EnvironmentConfig``, pinned to an
account and a region. The shipped accounts and hosted zone ids are placeholders (CI
synthesizes with them): replace them with yours before the first deploy
(``docs/operations.md``; ``make preflight ENV=...`` compares them with your credentials).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Annotated, Literal

import botocore.session
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
_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:\d{1,5})?$")
_CERTIFICATE_ARN = re.compile(
    r"^arn:aws[a-z-]*:acm:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):certificate/[0-9a-f-]{36}$"
)

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

# Services every stage deploys, by botocore service name: the region must offer them.
REQUIRED_SERVICES = {"sesv2": "SES v2", "apigatewayv2": "API Gateway WebSocket APIs"}


@functools.cache
def service_regions(service: str) -> frozenset[str]:
    """The regions with an endpoint for ``service``, from botocore's endpoint data (offline)."""
    session = botocore.session.get_session()
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions(service, partition)
    )


def _domain_name(value: str) -> str:
    value = value.rstrip(".").lower()
    if not _DOMAIN.match(value):
        raise ValueError(f"not a domain name: {value!r}")
    return value


def _origin(value: str) -> str:
    value = value.rstrip("/").lower()
    if not _ORIGIN.match(value):
        raise ValueError(f"not a browser origin (scheme://host[:port]): {value!r}")
    return value


# Lower case, without the trailing dot.
DomainName = Annotated[str, AfterValidator(_domain_name)]
Origin = Annotated[str, AfterValidator(_origin)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostedZoneConfig(_Model):
    """A public Route 53 hosted zone referenced by id (no lookup, so synth stays offline)."""

    zone_id: str = Field(pattern=r"^Z[A-Z0-9]{4,32}$")
    zone_name: DomainName

    def contains(self, name: str) -> bool:
        return name == self.zone_name or name.endswith("." + self.zone_name)


class CustomDomainConfig(_Model):
    """Hosts of their own for the WebSocket API and the HTTP app.

    API Gateway never lets a WebSocket API share a custom domain with an HTTP API, so the two
    take separate hosts. TLS comes from ``certificate_arn`` (a regional ACM certificate in the
    stage's account and region covering both hosts) or, without it, from DNS-validated
    certificates in the environment's ``hosted_zone``, which then also gets the alias records.
    """

    websocket_host: DomainName
    api_host: DomainName
    certificate_arn: str | None = Field(default=None, pattern=_CERTIFICATE_ARN.pattern)

    @model_validator(mode="after")
    def _distinct(self) -> CustomDomainConfig:
        if self.websocket_host == self.api_host:
            raise ValueError("websocket_host and api_host must differ (API Gateway refuses both)")
        return self


class WebSocketThrottle(_Model):
    """Stage-wide API Gateway throttling for the WebSocket routes."""

    rate_limit: float = Field(default=100.0, gt=0)
    burst_limit: int = Field(default=200, gt=0)


class ContainerConfig(_Model):
    """The Fargate service running the runtime's HTTP app (HTTPS on ``custom_domain.api_host``)."""

    enabled: bool = False
    cpu: Literal[256, 512, 1024, 2048, 4096] = 256
    memory_mib: int = Field(default=512, ge=512, le=30720)
    desired_count: int = Field(default=2, ge=1, le=20)
    # Named here rather than looked up: a lookup needs credentials at synth time. Empty: the
    # region's zones a and b.
    availability_zones: tuple[str, ...] = Field(default=(), max_length=3)

    @field_validator("availability_zones")
    @classmethod
    def _two_zones(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value and len(value) < 2:
            raise ValueError("the load balancer needs two availability zones at least")
        return value


class FlagRollout(_Model):
    """How AppConfig rolls out a new flags document: a linear, gradual deployment strategy.

    Every ``duration_minutes / (100 / growth_factor)`` minutes another ``growth_factor`` per
    cent of the processes polling the profile get the new document; AppConfig then watches it
    for ``final_bake_minutes`` before the deployment completes.
    """

    duration_minutes: int = Field(default=10, ge=1, le=1440)
    growth_factor: float = Field(default=20.0, ge=1, lt=100)
    final_bake_minutes: int = Field(default=10, ge=0, le=1440)


class MigrationConfig(_Model):
    """A provider migration in progress: the second provider of each service.

    The dashboard shows each service's providers side by side, and an alarm fires when the
    secondary's error rate exceeds the primary's by more than ``error_rate_margin`` (0.02:
    two percentage points). ``websocket_secondary_provider`` also reaches the HTTP app as
    ``WEBSOCKET_SECONDARY_PROVIDER`` (dual publish while the flag is on).
    """

    email_secondary_provider: Literal["ses", "smtp", "resend", "sendgrid", "mock"] | None = None
    websocket_secondary_provider: Literal["apigateway", "pusher"] | None = None
    error_rate_margin: float = Field(default=0.02, gt=0, lt=1)


class EnvironmentConfig(_Model):
    """Everything that differs between dev, staging and prod."""

    name: Literal["dev", "staging", "prod"]
    account: str = Field(pattern=r"^\d{12}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")

    # Email
    domain: DomainName
    mail_from_subdomain: str = Field(default="mail", pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    from_address: EmailStr
    sender_addresses: tuple[EmailStr, ...] = ()
    ses_sandbox: bool = True
    email_provider: Literal["ses", "smtp", "mock"] = "ses"
    hosted_zone: HostedZoneConfig | None = None
    custom_domain: CustomDomainConfig | None = None

    # Realtime
    websocket_provider: Literal["apigateway", "pusher"] = "apigateway"
    websocket_stage_name: str = Field(default="live", pattern=r"^[A-Za-z0-9_]{1,128}$")
    # The public app key pusher-js connects with (/app/<key>); also an API mapping path, so
    # only characters API Gateway allows there.
    websocket_app_key: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")
    websocket_app_id: str = Field(default="1", pattern=r"^\d{1,20}$")
    websocket_activity_timeout: int = Field(default=120, ge=1, le=540)
    # Pusher connections are anonymous until channel auth or pusher:signin; the $connect
    # token authorizer is an opt-in.
    websocket_token_authorizer: bool = False
    websocket_throttle: WebSocketThrottle = WebSocketThrottle()
    pusher_cluster: str = Field(default="eu", pattern=r"^[a-z0-9-]{1,32}$")
    # Where the API Gateway handlers post Pusher-format webhooks (presence, occupancy).
    websocket_webhook_url: HttpUrl | None = None
    # AWS::ApiGateway::Account is one per account and region (WebSocket stage logging needs
    # its CloudWatch role): one stage per account and region manages it, or none where
    # something else does (checked by `check_environments`).
    manage_apigateway_account_role: bool = False

    # HTTP app
    web_cors_origins: tuple[Origin, ...] = ()

    # Migration controls: the flags' AppConfig rollout and the providers compared.
    flag_rollout: FlagRollout = FlagRollout()
    migration: MigrationConfig = MigrationConfig()
    # POWERTOOLS_SERVICE_NAME of the application's processes that send mail and trigger
    # events through the runtime: their metrics carry it as the ``service`` dimension, which
    # the per-provider figures of the dashboard and the migration alarm select.
    application_service_name: str = Field(
        default="milequest-app", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    )

    # Operations
    alarm_email: EmailStr | None = None
    log_retention_days: int = 30
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    removal_policy: Literal["destroy", "retain"] = "retain"
    # Off by default: accounts with a low concurrency quota reject any reservation
    # (`make preflight` tells whether the account allows it).
    reserved_concurrency: int | None = Field(default=None, ge=1)
    # Lambda SnapStart on the published versions every caller invokes through the alias.
    snap_start: bool = False
    container: ContainerConfig = ContainerConfig()

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in _RETENTION_DAYS:
            raise ValueError(f"CloudWatch Logs accepts only {sorted(_RETENTION_DAYS)} days")
        return value

    @field_validator("region")
    @classmethod
    def _region_offers_services(cls, value: str) -> str:
        missing = [
            label for svc, label in REQUIRED_SERVICES.items() if value not in service_regions(svc)
        ]
        if missing:
            raise ValueError(f"region {value} does not offer {' or '.join(missing)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EnvironmentConfig:
        if self.from_address.rsplit("@", 1)[1].lower() != self.domain:
            raise ValueError(f"from_address must be an address at {self.domain}")
        zone = self.hosted_zone
        if zone is not None and not zone.contains(self.domain):
            raise ValueError(f"domain {self.domain} is not inside hosted zone {zone.zone_name}")
        self._check_custom_domain()
        for name in self.container.availability_zones:
            if not re.fullmatch(re.escape(self.region) + "[a-z]", name):
                raise ValueError(f"availability zone {name} is not one of {self.region}")
        migration = self.migration
        for primary, secondary in (
            (self.email_provider, migration.email_secondary_provider),
            (self.websocket_provider, migration.websocket_secondary_provider),
        ):
            if primary == secondary:
                raise ValueError(f"migration: {secondary} is already the primary provider")
        if self.container.enabled and self.custom_domain is None:
            raise ValueError(
                "container.enabled serves the HTTP app through a load balancer, which must "
                "use HTTPS: set custom_domain (api_host, with certificate_arn or hosted_zone)"
            )
        return self

    def _check_custom_domain(self) -> None:
        domain = self.custom_domain
        if domain is None:
            return
        if domain.certificate_arn is None:
            if self.hosted_zone is None:
                raise ValueError(
                    "custom_domain needs custom_domain.certificate_arn or a hosted_zone"
                )
            for host in (domain.websocket_host, domain.api_host):
                if not self.hosted_zone.contains(host):
                    raise ValueError(
                        f"{host} is not inside hosted zone {self.hosted_zone.zone_name}"
                    )
            return
        match = _CERTIFICATE_ARN.match(domain.certificate_arn)
        assert match is not None  # the field's pattern
        if (match["region"], match["account"]) != (self.region, self.account):
            raise ValueError(
                "custom_domain.certificate_arn must be a certificate of the stage's account "
                f"and region ({self.account}, {self.region}): API Gateway and the load "
                "balancer use regional certificates"
            )

    # Derived values -------------------------------------------------------------------

    @property
    def mail_from_domain(self) -> str:
        return f"{self.mail_from_subdomain}.{self.domain}"

    @property
    def cdk_environment(self) -> Environment:
        return Environment(account=self.account, region=self.region)

    @property
    def availability_zones(self) -> tuple[str, ...]:
        """The container target's zones (two at least, for the load balancer)."""
        return self.container.availability_zones or (f"{self.region}a", f"{self.region}b")

    @property
    def log_retention(self) -> logs.RetentionDays:
        return _RETENTION_DAYS[self.log_retention_days]

    @property
    def cdk_removal_policy(self) -> RemovalPolicy:
        return RemovalPolicy.DESTROY if self.removal_policy == "destroy" else RemovalPolicy.RETAIN

    @property
    def resource_prefix(self) -> str:
        return f"milequest-{self.name}"


def check_environments(configs: Iterable[EnvironmentConfig]) -> None:
    """Rules across environments: at most one manages API Gateway's account role per account
    and region (the setting is one per account and region; a second stack would fight over it,
    and deleting either would break the other's logging)."""
    managers: dict[tuple[str, str], list[str]] = {}
    for config in configs:
        if config.manage_apigateway_account_role:
            managers.setdefault((config.account, config.region), []).append(config.name)
    for (account, region), names in managers.items():
        if len(names) > 1:
            raise ValueError(
                f"{' and '.join(names)} both set manage_apigateway_account_role in account "
                f"{account} and region {region}: API Gateway's CloudWatch role is one per "
                "account and region, set it in one of them"
            )


# Placeholders (CI synthesizes with them): replace with your accounts and zones.
NONPROD_ACCOUNT = "111111111111"
PROD_ACCOUNT = "222222222222"
REGION = "eu-west-1"

ENVIRONMENTS: dict[str, EnvironmentConfig] = {
    cfg.name: cfg
    for cfg in (
        EnvironmentConfig(
            name="dev",
            account=NONPROD_ACCOUNT,
            region=REGION,
            domain="dev.milequest.app",
            from_address="no-reply@dev.milequest.app",
            sender_addresses=("team@dev.milequest.app",),
            ses_sandbox=True,
            hosted_zone=HostedZoneConfig(
                zone_id="Z00000000000000000DEV", zone_name="dev.milequest.app"
            ),
            custom_domain=CustomDomainConfig(
                websocket_host="ws.dev.milequest.app", api_host="api.dev.milequest.app"
            ),
            websocket_app_key="milequest-dev-key",
            web_cors_origins=("http://localhost:3000", "https://dev.milequest.app"),
            manage_apigateway_account_role=True,
            log_retention_days=14,
            log_level="DEBUG",
            removal_policy="destroy",
            websocket_throttle=WebSocketThrottle(rate_limit=20, burst_limit=40),
            # Flag changes reach dev quickly; still in steps, as in the other stages.
            flag_rollout=FlagRollout(duration_minutes=2, growth_factor=50, final_bake_minutes=1),
        ),
        EnvironmentConfig(
            name="staging",
            account=NONPROD_ACCOUNT,
            region=REGION,
            domain="staging.milequest.app",
            from_address="no-reply@staging.milequest.app",
            sender_addresses=("team@staging.milequest.app",),
            ses_sandbox=True,
            hosted_zone=HostedZoneConfig(
                zone_id="Z000000000000000STAGING", zone_name="staging.milequest.app"
            ),
            custom_domain=CustomDomainConfig(
                websocket_host="ws.staging.milequest.app", api_host="api.staging.milequest.app"
            ),
            websocket_app_key="milequest-staging-key",
            web_cors_origins=("https://staging.milequest.app",),
            alarm_email="ops@milequest.app",
            log_retention_days=30,
            removal_policy="destroy",
            snap_start=True,
            websocket_throttle=WebSocketThrottle(rate_limit=50, burst_limit=100),
        ),
        EnvironmentConfig(
            name="prod",
            account=PROD_ACCOUNT,
            region=REGION,
            domain="milequest.app",
            from_address="no-reply@milequest.app",
            ses_sandbox=False,
            hosted_zone=HostedZoneConfig(
                zone_id="Z0000000000000000PROD", zone_name="milequest.app"
            ),
            custom_domain=CustomDomainConfig(
                websocket_host="ws.milequest.app", api_host="api.milequest.app"
            ),
            websocket_app_key="milequest-prod-key",
            web_cors_origins=("https://milequest.app", "https://www.milequest.app"),
            manage_apigateway_account_role=True,
            alarm_email="ops@milequest.app",
            log_retention_days=365,
            removal_policy="retain",
            snap_start=True,
            websocket_throttle=WebSocketThrottle(rate_limit=500, burst_limit=1000),
            container=ContainerConfig(enabled=True, cpu=512, memory_mib=1024, desired_count=2),
            flag_rollout=FlagRollout(duration_minutes=20, growth_factor=10, final_bake_minutes=15),
        ),
    )
}


def environment_configs() -> list[EnvironmentConfig]:
    """The configured environments, in promotion order."""
    return [ENVIRONMENTS[name] for name in ("dev", "staging", "prod")]


__all__ = [
    "ENVIRONMENTS",
    "REQUIRED_SERVICES",
    "ContainerConfig",
    "CustomDomainConfig",
    "DomainName",
    "EnvironmentConfig",
    "FlagRollout",
    "HostedZoneConfig",
    "MigrationConfig",
    "Origin",
    "WebSocketThrottle",
    "check_environments",
    "environment_configs",
    "service_regions",
]
