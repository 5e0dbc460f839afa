"""The email service's settings, read from the environment by pydantic-settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from milequest.services.config import ServiceSettings

PROVIDERS = ("ses", "smtp", "mock")
"""Providers this package implements."""

RESERVED_PROVIDERS = ("sendgrid", "postmark", "resend")
"""Names kept for later providers: selecting one fails, it never falls back."""


class EmailSettings(ServiceSettings):
    """Every setting of the email service; each field is read from the upper-cased variable."""

    email_provider: str = Field("ses", description="ses | smtp | mock")
    default_from_email: str = Field(
        "noreply@milequest.app", description="Sender used when a message names none"
    )
    aws_ses_region: str | None = Field(None, description="SES region (else AWS_REGION)")
    ses_sandbox: bool = Field(False, description="Refuse unverified recipients before SES")
    ses_configuration_set: str | None = Field(None, description="Configuration set for sends")
    ses_template_prefix: str = Field("", description="Prefix of the deployed SES template names")
    ses_template_mode: Literal["ses", "local"] = Field(
        "ses", description="ses: SES renders deployed templates; local: render here, send content"
    )
    ses_retry_mode: Literal["standard", "adaptive"] = Field(
        "standard", description="botocore retry mode for SES calls"
    )
    ses_max_attempts: int = Field(5, ge=1, le=20, description="Total attempts per SES call")
    ses_max_connections: int = Field(10, ge=1, le=100, description="HTTP pool and send threads")
    ses_max_send_rate: float | None = Field(
        None, gt=0, description="Messages per second; default: SendQuota.MaxSendRate"
    )
    ses_suppression_cache_seconds: int = Field(
        300, ge=0, description="How long the pre-send suppression snapshot lives (0: no check)"
    )
    smtp_host: str = Field("localhost", description="SMTP server")
    smtp_port: int | None = Field(None, ge=1, le=65535, description="Default 25/587/465")
    smtp_username: str | None = Field(None, description="SMTP login (optional)")
    smtp_password: SecretStr | None = Field(None, description="SMTP password")
    smtp_security: Literal["none", "starttls", "ssl"] = Field(
        "starttls", description="none | starttls | ssl"
    )
    smtp_secret_arn: str | None = Field(None, description="Secret with username and password")
    smtp_timeout: float = Field(10.0, gt=0, description="SMTP timeout (s)")
    smtp_ca_file: str | None = Field(None, description="CA bundle to trust for SMTP TLS")
    email_mock_latency_ms: float = Field(0.0, ge=0, description="Mock: added latency per call")
    email_mock_fail_rate: float = Field(
        0.0, ge=0, le=1, description="Mock: share of calls that fail"
    )

    @property
    def provider(self) -> str:
        return self.email_provider.strip().lower()

    @property
    def resolved_smtp_port(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {"none": 25, "starttls": 587, "ssl": 465}[self.smtp_security]
