"""The email service's settings, read from the environment by pydantic-settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from milequest.services.config import ServiceSettings

PROVIDERS = ("ses", "smtp", "mock", "resend", "sendgrid")
"""Providers this package implements."""

RESERVED_PROVIDERS = ("postmark",)
"""Names kept for later providers: selecting one fails, it never falls back."""


class EmailSettings(ServiceSettings):
    """Every setting of the email service; each field is read from the upper-cased variable."""

    email_provider: str = Field("ses", description="ses | smtp | mock | resend | sendgrid")
    default_from_email: str = Field(
        "noreply@milequest.app", description="Sender used when a message names none"
    )
    email_call_timeout: float = Field(
        15.0,
        gt=0,
        le=120,
        description="Total deadline of one provider call, retries and waits included (s)",
    )
    email_suppression_table: str | None = Field(
        None, description="DynamoDB table of the shared suppression list (unset: in memory)"
    )
    email_bulk_templates: str = Field(
        "weekly-summary",
        description="Templates sent as bulk mail (one-click unsubscribe), as "
        "name[:category], comma-separated",
    )
    email_unsubscribe_url: str | None = Field(
        None, description="HTTPS URL of POST /email/unsubscribe, for List-Unsubscribe links"
    )
    email_unsubscribe_secret: SecretStr | None = Field(
        None, description="Key that signs unsubscribe links"
    )
    email_unsubscribe_secret_arn: str | None = Field(
        None, description="Secret holding that key (instead of EMAIL_UNSUBSCRIBE_SECRET)"
    )
    email_unsubscribe_mailto: str | None = Field(
        None, description="Address added to List-Unsubscribe as a mailto: alternative"
    )
    email_api_max_attempts: int = Field(
        4, ge=1, le=10, description="Attempts per Resend / SendGrid API call (429, 5xx)"
    )
    email_delivery: Literal["direct", "queue"] = Field(
        "direct",
        description="direct: send in the calling process; queue: validate, then put the "
        "message on EMAIL_QUEUE_URL for the queue consumer",
    )
    email_queue_url: str | None = Field(None, description="SQS queue of queued mail")
    email_dead_letter_queue_url: str | None = Field(
        None, description="Its dead-letter queue (the consumer moves failures there with a reason)"
    )
    email_queue_bucket: str | None = Field(
        None, description="S3 bucket for queued messages over SQS's size limit (claim check)"
    )
    email_idempotency_table: str | None = Field(
        None, description="DynamoDB table of the queue consumer's idempotency records"
    )
    email_idempotency_ttl: int = Field(
        86_400,
        ge=60,
        le=30 * 86_400,
        description="Seconds an idempotency key holds: the same key within it sends once",
    )
    email_queue_concurrency: int = Field(
        2,
        ge=1,
        le=1000,
        description="Queue consumers at once (the event source's maximum concurrency); each "
        "sends at this share of the provider's rate",
    )
    email_queue_max_receives: int = Field(
        8,
        ge=1,
        le=100,
        description="Receives of a still-failing queued message before the consumer "
        "dead-letters it",
    )
    email_queue_retry_delay: int = Field(
        30,
        ge=0,
        le=900,
        description="Seconds before a failed queued send is retried; doubles per receive "
        "(at most 900)",
    )
    email_failover_provider: str | None = Field(
        None,
        description="Where a send goes when its provider cannot have taken it (open circuit, "
        "refused connection, 429/503); the email_failover_provider flag overrides it",
    )
    email_routing_providers: str = Field(
        "",
        description="Other providers the email_provider flag may choose (comma-separated; "
        "each configured)",
    )
    email_breaker_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Consecutive PROVIDER_UNAVAILABLE failures (timeouts included) that open "
        "a provider's circuit",
    )
    email_breaker_reset: float = Field(
        30.0, gt=0, le=3600, description="Seconds an open circuit refuses calls before one probe"
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
    ses_mail_from_subdomain: str = Field(
        "mail",
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
        description="verify_domain: the custom MAIL FROM (return path) is <this>.<domain>",
    )
    ses_events_topic_arns: str = Field(
        "",
        description="SNS topics whose messages POST /webhooks/ses accepts (comma-separated)",
    )
    resend_api_key: SecretStr | None = Field(None, description="Resend API key (re_...)")
    resend_secret_arn: str | None = Field(
        None, description="Secret with JSON api_key / webhook_secret (or the key alone)"
    )
    resend_webhook_secret: SecretStr | None = Field(
        None, description="Signing secret of the Resend webhook (whsec_...)"
    )
    resend_api_url: str = Field("https://api.resend.com", description="Resend API base URL")
    resend_send_rate: float = Field(
        2.0, gt=0, description="Resend requests per second for the queue consumers (its default)"
    )
    resend_batch_validation: Literal["permissive", "strict"] = Field(
        "permissive",
        description="Batch sends: permissive sends the valid emails of a batch; strict "
        "refuses the whole batch",
    )
    sendgrid_api_key: SecretStr | None = Field(None, description="SendGrid API key (SG....)")
    sendgrid_secret_arn: str | None = Field(
        None, description="Secret with JSON api_key / webhook_public_key (or the key alone)"
    )
    sendgrid_webhook_public_key: str | None = Field(
        None, description="Verification key of the signed Event Webhook (base64)"
    )
    sendgrid_api_url: str = Field(
        "https://api.sendgrid.com", description="SendGrid API base URL (EU: api.eu.sendgrid.com)"
    )
    sendgrid_send_rate: float = Field(
        10_000.0,
        gt=0,
        description="SendGrid mail/send requests per second for the queue consumers",
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
    smtp_local_hostname: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9.\-\[\]:]+$",
        description="Name given in EHLO (else this machine's FQDN, looked up once per process)",
    )
    smtp_send_rate: float | None = Field(
        None, gt=0, description="Messages per second for the queue consumers (unset: no limit)"
    )
    email_mock_latency_ms: float = Field(0.0, ge=0, description="Mock: added latency per call")
    email_mock_fail_rate: float = Field(
        0.0, ge=0, le=1, description="Mock: share of calls that fail"
    )

    @property
    def provider(self) -> str:
        return self.email_provider.strip().lower()

    @property
    def routed_providers(self) -> tuple[str, ...]:
        """The providers besides ``EMAIL_PROVIDER`` that sends may be routed to."""
        names = [n.strip().lower() for n in self.email_routing_providers.split(",")]
        if self.email_failover_provider:
            names.append(self.email_failover_provider.strip().lower())
        return tuple(dict.fromkeys(n for n in names if n and n != self.provider))

    @property
    def resolved_smtp_port(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {"none": 25, "starttls": 587, "ssl": 465}[self.smtp_security]

    @property
    def sns_topic_arns(self) -> frozenset[str]:
        """The SNS topic ARNs ``SES_EVENTS_TOPIC_ARNS`` names."""
        return frozenset(a.strip() for a in self.ses_events_topic_arns.split(",") if a.strip())
