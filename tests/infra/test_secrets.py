"""Secrets are never rewritten by a deployment: no configuration value reaches a secret's
value properties, and the app secret's filler only adds what is missing."""

from __future__ import annotations

import base64
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from infra import secret_filler
from infra.app_secrets import PUSHER_PLACEHOLDER
from infra.config import ENVIRONMENTS

from .conftest import CERTIFICATE_ARN, Synthesized, resources, synth_variant, variant

ENVS = ("dev", "staging", "prod")
# Every setting changed except the environment's name (its identity) and the public app
# key, which the filler custom resource merges in (see test_app_key_reaches_only_the_filler).
CHANGED = {
    "account": "333333333333",
    "region": "eu-central-1",
    "domain": "other.example.org",
    "mail_from_subdomain": "bounce",
    "from_address": "sender@other.example.org",
    "sender_addresses": ("a@other.example.org",),
    "ses_sandbox": False,
    "email_provider": "smtp",
    "hosted_zone": {"zone_id": "Z99999999999", "zone_name": "example.org"},
    "custom_domain": {
        "websocket_host": "socket.example.org",
        "api_host": "app.example.org",
        "certificate_arn": CERTIFICATE_ARN.replace("eu-west-1", "eu-central-1").replace(
            "111111111111", "333333333333"
        ),
    },
    "websocket_provider": "pusher",
    "websocket_stage_name": "v2",
    "websocket_app_id": "4242",
    "websocket_activity_timeout": 30,
    "websocket_token_authorizer": True,
    "websocket_throttle": {"rate_limit": 7, "burst_limit": 9},
    "pusher_cluster": "mt1",
    "websocket_webhook_url": "https://hooks.example.org/pusher",
    "manage_apigateway_account_role": False,
    "web_cors_origins": ("https://app.example.org",),
    "alarm_email": "oncall@example.org",
    "log_retention_days": 7,
    "log_level": "ERROR",
    "removal_policy": "destroy",
    "reserved_concurrency": 3,
    "snap_start": True,
    "container": {"enabled": True, "cpu": 1024, "memory_mib": 2048, "desired_count": 3},
    "flag_rollout": {"duration_minutes": 60, "growth_factor": 5, "final_bake_minutes": 30},
    "migration": {
        "email_secondary_provider": "resend",
        "websocket_secondary_provider": "apigateway",
        "error_rate_margin": 0.1,
    },
    "application_service_name": "other-app",
}


def _secret_values(synthesized: Synthesized, env: str) -> dict[str, dict[str, Any]]:
    """The value-bearing properties of each secret, by logical id."""
    template = synthesized.template_json(env, "Realtime")
    return {
        lid: {
            key: value
            for key, value in secret["Properties"].items()
            if key in {"SecretString", "GenerateSecretString", "Description"}
        }
        for lid, secret in resources(template, "AWS::SecretsManager::Secret").items()
    }


def test_changing_every_setting_leaves_the_secrets_alone(
    synthesized: Synthesized, tmp_path: Path
) -> None:
    from infra.config import EnvironmentConfig

    assert set(CHANGED) | {"name", "websocket_app_key"} == set(EnvironmentConfig.model_fields)
    changed = synth_variant(variant("dev", **CHANGED), tmp_path)
    before = _secret_values(synthesized, "dev")
    assert len(before) == 2
    assert _secret_values(changed, "dev") == before


def test_app_key_reaches_only_the_filler(synthesized: Synthesized) -> None:
    template = synthesized.template_json("dev", "Realtime")
    (filler,) = resources(template, "Custom::WebSocketAppSecret").values()
    props = filler["Properties"]
    assert props["AppKey"] == ENVIRONMENTS["dev"].websocket_app_key
    secrets = resources(template, "AWS::SecretsManager::Secret")
    assert props["SecretArn"]["Ref"] in secrets
    assert ENVIRONMENTS["dev"].websocket_app_key not in json.dumps(
        [s["Properties"].get("SecretString", "") for s in secrets.values()]
    )


@pytest.mark.parametrize("env", ENVS)
def test_secret_resources(synthesized: Synthesized, env: str) -> None:
    template = synthesized.template_json(env, "Realtime")
    secrets = [r["Properties"] for r in resources(template, "AWS::SecretsManager::Secret").values()]
    (app_secret,) = [s for s in secrets if "GenerateSecretString" in s]
    spec = app_secret["GenerateSecretString"]
    assert spec["GenerateStringKey"] == "secret"
    # Fixed per environment: the same text earlier releases deployed (no regeneration).
    assert json.loads(spec["SecretStringTemplate"]) == {"key": f"milequest-{env}"}
    (pusher,) = [s for s in secrets if "SecretString" in s]
    assert pusher["SecretString"] == PUSHER_PLACEHOLDER
    placeholder = json.loads(PUSHER_PLACEHOLDER)
    assert placeholder["app_id"] == placeholder["key"] == placeholder["secret"] == ""
    # The filler runs the checked-in module, inline, after its role may write the secret.
    (filler,) = resources(template, "Custom::WebSocketAppSecret").values()
    function = template["Resources"][filler["Properties"]["ServiceToken"]["Fn::GetAtt"][0]]
    assert function["Properties"]["Code"]["ZipFile"] == Path(secret_filler.__file__).read_text()
    assert function["Properties"]["Handler"] == "index.handler"
    assert len(function["Properties"]["Code"]["ZipFile"]) <= 4096  # CloudFormation's limit
    assert any(dep.startswith("WebSocketAppSecretFiller") for dep in filler["DependsOn"])


# The filler against Secrets Manager (moto) --------------------------------------------------


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager")  # the region Lambda would give the handler


def _stored(client: Any, arn: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
    return value


def test_filler_sets_the_key_and_adds_a_master_key_once(secretsmanager: Any) -> None:
    arn = secretsmanager.create_secret(
        Name="app", SecretString=json.dumps({"key": "milequest-dev", "secret": "generated"})
    )["ARN"]
    assert secret_filler.fill(secretsmanager, arn, "public-key-1") is True
    first = _stored(secretsmanager, arn)
    assert first["key"] == "public-key-1"
    assert first["secret"] == "generated"
    assert len(base64.b64decode(first["encryption_master_key"], validate=True)) == 32
    # A second run (an unchanged redeploy) writes nothing.
    versions = len(secretsmanager.list_secret_version_ids(SecretId=arn)["Versions"])
    assert secret_filler.fill(secretsmanager, arn, "public-key-1") is False
    assert len(secretsmanager.list_secret_version_ids(SecretId=arn)["Versions"]) == versions
    # A new key keeps the secret and the master key.
    assert secret_filler.fill(secretsmanager, arn, "public-key-2") is True
    assert _stored(secretsmanager, arn) == first | {"key": "public-key-2"}


def test_filler_keeps_what_operators_put_in(secretsmanager: Any) -> None:
    mine = {"key": "k", "secret": "rotated-by-hand", "encryption_master_key": "b3duIGtleQ=="}
    arn = secretsmanager.create_secret(Name="app", SecretString=json.dumps(mine))["ARN"]
    assert secret_filler.fill(secretsmanager, arn, "k") is False
    assert _stored(secretsmanager, arn) == mine


class _CfnResponse(types.ModuleType):
    """Stands in for AWS's cfnresponse module, recording what would go to CloudFormation."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"

    def __init__(self) -> None:
        super().__init__("cfnresponse")
        self.sent: list[dict[str, Any]] = []

    def send(
        self, event: Any, context: Any, status: str, data: Any, physical_id: str, **kw: Any
    ) -> None:
        self.sent.append({"status": status, "physical_id": physical_id, **kw})


@pytest.mark.parametrize("request_type", ["Create", "Update", "Delete"])
def test_handler_reports_to_cloudformation(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch, request_type: str
) -> None:
    response = _CfnResponse()
    monkeypatch.setitem(sys.modules, "cfnresponse", response)
    arn = secretsmanager.create_secret(Name="app", SecretString='{"secret": "s"}')["ARN"]
    event = {"RequestType": request_type, "ResourceProperties": {"SecretArn": arn, "AppKey": "k"}}
    secret_filler.handler(event, None)
    assert response.sent == [{"status": "SUCCESS", "physical_id": arn, "reason": None}]
    # A delete leaves the secret as it is (the secret resource decides its own fate).
    assert ("key" in _stored(secretsmanager, arn)) == (request_type != "Delete")


def test_handler_reports_failures(secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    response = _CfnResponse()
    monkeypatch.setitem(sys.modules, "cfnresponse", response)
    missing = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:missing-AbCdEf"
    event = {"RequestType": "Create", "ResourceProperties": {"SecretArn": missing, "AppKey": "k"}}
    secret_filler.handler(event, None)
    ((sent),) = response.sent
    assert sent["status"] == "FAILED"
    assert "ResourceNotFoundException" in sent["reason"]


_JSON_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@given(
    current=st.dictionaries(_JSON_TEXT, _JSON_TEXT, max_size=5),
    key=st.text(min_size=1, max_size=30),
)
def test_property_complete_only_sets_the_key_and_fills_the_master_key(
    current: dict[str, Any], key: str
) -> None:
    wanted = secret_filler.complete(current, key)
    assert wanted["key"] == key
    for name, value in current.items():
        if name not in {"key", secret_filler.MASTER_KEY_FIELD}:
            assert wanted[name] == value
    master = current.get(secret_filler.MASTER_KEY_FIELD)
    if master:
        assert wanted[secret_filler.MASTER_KEY_FIELD] == master
    else:
        assert len(base64.b64decode(wanted[secret_filler.MASTER_KEY_FIELD], validate=True)) == 32
    assert secret_filler.complete(wanted, key) == wanted
