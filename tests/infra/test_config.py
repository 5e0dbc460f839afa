"""Per-environment settings: validation, placement, custom domains, cross-environment rules."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from infra.config import (
    ENVIRONMENTS,
    REQUIRED_SERVICES,
    EnvironmentConfig,
    check_environments,
    environment_configs,
    service_regions,
)

from .conftest import CERTIFICATE_ARN


def _config(name: str = "dev", **overrides: Any) -> EnvironmentConfig:
    data = ENVIRONMENTS[name].model_dump() | overrides
    return EnvironmentConfig.model_validate(data)


def test_environments_in_promotion_order() -> None:
    assert [c.name for c in environment_configs()] == ["dev", "staging", "prod"]


def test_prod_is_production_grade() -> None:
    prod = ENVIRONMENTS["prod"]
    assert not prod.ses_sandbox
    assert prod.cdk_removal_policy == RemovalPolicy.RETAIN
    assert prod.container.enabled
    assert prod.custom_domain is not None
    assert prod.alarm_email is not None
    assert prod.log_retention == logs.RetentionDays.ONE_YEAR
    assert ENVIRONMENTS["dev"].cdk_removal_policy == RemovalPolicy.DESTROY


def test_shipped_placement_and_operations_defaults() -> None:
    for config in environment_configs():
        env = config.cdk_environment
        assert (env.account, env.region) == (config.account, config.region)
        # Reservations fail on accounts with a low quota: opt-in only.
        assert config.reserved_concurrency is None
        assert config.custom_domain is not None
    assert [c.snap_start for c in environment_configs()] == [False, True, True]
    # One API Gateway account role per account and region.
    check_environments(environment_configs())
    managers = {(c.account, c.region) for c in environment_configs()}
    assert sum(c.manage_apigateway_account_role for c in environment_configs()) == len(managers)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("domain", "not a domain", "domain"),
        ("from_address", "no-reply@elsewhere.example", "from_address"),
        ("log_retention_days", 10, "log_retention_days"),
        ("reserved_concurrency", 0, "reserved_concurrency"),
        ("region", "mars-1", "region"),
        ("account", "12345", "account"),
        ("account", None, "account"),
        ("region", None, "region"),
        ("hosted_zone", {"zone_id": "Z0123456789ABC", "zone_name": "other.example"}, "hosted zone"),
        ("hosted_zone", {"zone_id": "Z0123456789ABC", "zone_name": "not a zone"}, "zone_name"),
        ("websocket_app_key", "has/slash", "websocket_app_key"),
        ("websocket_app_key", "short", "websocket_app_key"),
        ("websocket_app_id", "abc", "websocket_app_id"),
        ("websocket_activity_timeout", 600, "websocket_activity_timeout"),
        ("web_cors_origins", ("https://ok.example/path",), "web_cors_origins"),
        ("web_cors_origins", ("ftp://files.example",), "web_cors_origins"),
        ("unknown_setting", True, "unknown_setting"),
        ("flag_rollout", {"growth_factor": 100}, "growth_factor"),
        ("flag_rollout", {"duration_minutes": 0}, "duration_minutes"),
        ("migration", {"email_secondary_provider": "ses"}, "already the primary"),
        ("migration", {"websocket_secondary_provider": "apigateway"}, "already the primary"),
        ("migration", {"websocket_secondary_provider": "mock"}, "websocket_secondary_provider"),
        ("migration", {"error_rate_margin": 0}, "error_rate_margin"),
        ("application_service_name", "has space", "application_service_name"),
    ],
)
def test_invalid_settings_are_rejected(field: str, value: Any, named: str) -> None:
    """Refused, and the error names what is wrong (not some other failure of the config)."""
    with pytest.raises(ValidationError) as refused:
        _config(**{field: value})
    assert named in str(refused.value)
    assert len(refused.value.errors()) == 1


def test_a_region_without_ses_v2_fails() -> None:
    lacking = "ap-east-1"  # Hong Kong: Lambda and API Gateway, no SES endpoint
    assert lacking in service_regions("apigatewayv2")
    assert lacking not in service_regions("sesv2")
    with pytest.raises(ValidationError, match="does not offer SES v2"):
        _config(region=lacking)
    assert set(REQUIRED_SERVICES) == {"sesv2", "apigatewayv2"}


def test_custom_domain_needs_a_certificate_or_a_zone_containing_its_hosts() -> None:
    hosts = {"websocket_host": "ws.dev.milequest.app", "api_host": "api.dev.milequest.app"}
    with pytest.raises(ValidationError, match="certificate_arn or a hosted_zone"):
        _config(hosted_zone=None, custom_domain=hosts)
    with pytest.raises(ValidationError, match="not inside hosted zone"):
        _config(custom_domain=hosts | {"api_host": "api.elsewhere.example"})
    with pytest.raises(ValidationError, match="must differ"):
        _config(custom_domain=hosts | {"api_host": hosts["websocket_host"]})
    # A certificate of the stage's account and region, with or without a zone.
    config = _config(hosted_zone=None, custom_domain=hosts | {"certificate_arn": CERTIFICATE_ARN})
    assert config.custom_domain is not None
    assert config.custom_domain.certificate_arn == CERTIFICATE_ARN
    other_region = CERTIFICATE_ARN.replace("eu-west-1", "us-east-1")
    with pytest.raises(ValidationError, match="account and region"):
        _config(custom_domain=hosts | {"certificate_arn": other_region})
    with pytest.raises(ValidationError, match="certificate_arn"):
        _config(custom_domain=hosts | {"certificate_arn": "arn:aws:acm:eu-west-1:1:cert/x"})


def test_the_container_target_requires_https() -> None:
    """A load balancer serving the app needs a certificate: synth fails naming the setting."""
    with pytest.raises(ValidationError, match="custom_domain"):
        _config("prod", custom_domain=None)
    assert _config("dev", custom_domain=None).custom_domain is None


def test_one_account_role_manager_per_account_and_region() -> None:
    dev, staging = ENVIRONMENTS["dev"], ENVIRONMENTS["staging"]
    assert (dev.account, dev.region) == (staging.account, staging.region)
    both = _config("staging", manage_apigateway_account_role=True)
    with pytest.raises(ValueError, match="dev and staging both set"):
        check_environments([dev, both])
    # None is allowed: another stack of the account may own the setting.
    check_environments([_config(manage_apigateway_account_role=False)])
    # Different accounts each have their own.
    check_environments([dev, ENVIRONMENTS["prod"]])


def test_availability_zones_are_named_not_looked_up() -> None:
    """A lookup would need credentials at synth time (`make synth` runs offline)."""
    assert _config("prod").availability_zones == ("eu-west-1a", "eu-west-1b")
    chosen = {"enabled": True, "availability_zones": ("eu-west-1b", "eu-west-1c")}
    assert _config("prod", container=chosen).availability_zones == ("eu-west-1b", "eu-west-1c")
    with pytest.raises(ValidationError, match="not one of eu-west-1"):
        _config("prod", container={"availability_zones": ("us-east-1a", "us-east-1b")})
    with pytest.raises(ValidationError, match="two availability zones"):
        _config("prod", container={"availability_zones": ("eu-west-1a",)})


def test_hosted_zone_name_is_normalized() -> None:
    config = _config(hosted_zone={"zone_id": "Z0123456789ABC", "zone_name": "Dev.Milequest.App."})
    assert config.hosted_zone is not None
    assert config.hosted_zone.zone_name == "dev.milequest.app"
    assert config.mail_from_domain == "mail.dev.milequest.app"


def test_configs_are_immutable() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        ENVIRONMENTS["dev"].domain = "x.example"  # type: ignore[misc]


_HOST = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){1,3}", fullmatch=True)


@given(
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    host=_HOST,
    port=st.none() | st.integers(1, 65535),
    slash=st.booleans(),
)
def test_property_origins_are_normalized(
    scheme: str, host: str, port: int | None, slash: bool
) -> None:
    origin = f"{scheme}://{host}" + (f":{port}" if port else "") + ("/" if slash else "")
    (normalized,) = _config(web_cors_origins=(origin,)).web_cors_origins
    assert normalized == origin.rstrip("/").lower()


@given(st.text(max_size=40))
def test_property_app_keys_are_path_safe_or_refused(key: str) -> None:
    """The key becomes an API mapping path (app/<key>): only characters it allows."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    try:
        config = _config(websocket_app_key=key)
    except ValidationError:
        assert not (8 <= len(key) <= 64 and set(key) <= allowed)
    else:
        assert set(config.websocket_app_key) <= allowed
        assert 8 <= len(config.websocket_app_key) <= 64
