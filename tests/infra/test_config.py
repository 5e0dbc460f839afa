"""Per-environment settings: validation and the CDK environment fallbacks."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from pydantic import ValidationError

from infra.config import ENVIRONMENTS, EnvironmentConfig, environment_configs


def _config(**overrides: Any) -> EnvironmentConfig:
    data = ENVIRONMENTS["dev"].model_dump() | overrides
    return EnvironmentConfig.model_validate(data)


def test_environments_in_promotion_order() -> None:
    assert [c.name for c in environment_configs()] == ["dev", "staging", "prod"]


def test_prod_is_production_grade() -> None:
    prod = ENVIRONMENTS["prod"]
    assert not prod.ses_sandbox
    assert prod.cdk_removal_policy == RemovalPolicy.RETAIN
    assert prod.container.enabled
    assert prod.alarm_email is not None
    assert prod.log_retention == logs.RetentionDays.ONE_YEAR
    assert ENVIRONMENTS["dev"].cdk_removal_policy == RemovalPolicy.DESTROY


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("domain", "not a domain"),
        ("from_address", "no-reply@elsewhere.example"),
        ("log_retention_days", 10),
        ("reserved_concurrency", 0),
        ("region", "mars-1"),
        ("account", "12345"),
        ("hosted_zone", {"zone_id": "Z0123456789ABC", "zone_name": "other.example"}),
        ("hosted_zone", {"zone_id": "Z0123456789ABC", "zone_name": "not a zone"}),
        ("unknown_setting", True),
    ],
)
def test_invalid_settings_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        _config(**{field: value})


def test_hosted_zone_must_contain_the_domain() -> None:
    config = _config(hosted_zone={"zone_id": "Z0123456789ABC", "zone_name": "milequest.app."})
    assert config.hosted_zone is not None
    assert config.hosted_zone.zone_name == "milequest.app"
    assert config.mail_from_domain == "mail.dev.milequest.app"


def test_account_and_region_fall_back_to_cdk_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "111122223333")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-central-1")
    env = _config().cdk_environment
    assert (env.account, env.region) == ("111122223333", "eu-central-1")
    pinned = _config(account="444455556666", region="us-west-2").cdk_environment
    assert (pinned.account, pinned.region) == ("444455556666", "us-west-2")


def test_without_cdk_defaults_the_environment_is_agnostic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)
    env = _config().cdk_environment
    assert (env.account, env.region) == (None, None)


def test_configs_are_immutable() -> None:
    with pytest.raises(ValidationError):
        ENVIRONMENTS["dev"].domain = "x.example"  # type: ignore[misc]
