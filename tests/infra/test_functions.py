"""Lambda functions: runtime, architecture, logging, concurrency and configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.bundling import LAMBDA_RUNTIME
from infra.config import ENVIRONMENTS

from .conftest import RUNTIME_VARS, Synthesized, resources

ENVS = ("dev", "staging", "prod")
POWERTOOLS = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
EMAIL_VARS = {
    "EMAIL_PROVIDER",
    "DEFAULT_FROM_EMAIL",
    "AWS_SES_REGION",
    "SES_SANDBOX",
    "SES_CONFIGURATION_SET",
    "SES_TEMPLATE_PREFIX",
}
WEBSOCKET_VARS = {
    "WEBSOCKET_PROVIDER",
    "CONNECTIONS_TABLE",
    "APIGW_MANAGEMENT_ENDPOINT",
    "WEBSOCKET_SECRET_ARN",
}


def _functions(
    synthesized: Synthesized, env: str
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Handler -> (function properties, its template) for every function of ``env``."""
    found = {}
    for stack in ("Email", "Realtime"):
        template = synthesized.template_json(env, stack)
        for resource in resources(template, "AWS::Lambda::Function").values():
            props = resource["Properties"]
            if props.get("Handler", "").startswith("milequest."):
                found[props["Handler"]] = (props, template)
    return found


def test_newest_python_runtime_is_used() -> None:
    assert LAMBDA_RUNTIME.name == "python3.14"


@pytest.mark.parametrize("env", ENVS)
def test_every_handler_is_deployed(synthesized: Synthesized, env: str) -> None:
    assert set(_functions(synthesized, env)) == {
        "milequest.handlers.ses_events.handler",
        "milequest.handlers.websocket.authorize",
        "milequest.handlers.websocket.on_connect",
        "milequest.handlers.websocket.on_disconnect",
        "milequest.handlers.websocket.on_message",
    }


@pytest.mark.parametrize("env", ENVS)
def test_runtime_architecture_logging_concurrency(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    for handler, (props, template) in _functions(synthesized, env).items():
        assert props["Runtime"] == "python3.14", handler
        assert props["Architectures"] == ["arm64"], handler
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
        log_group = template["Resources"][log_group_id]["Properties"]
        assert log_group["RetentionInDays"] == config.log_retention_days
        if config.reserved_concurrency is None:
            assert "ReservedConcurrentExecutions" not in props
        else:
            assert props["ReservedConcurrentExecutions"] == config.reserved_concurrency
        env_vars = props["Environment"]["Variables"]
        assert set(env_vars) >= POWERTOOLS
        # Only variables the runtime reads: a misspelt setting would be silently ignored.
        assert set(env_vars) <= RUNTIME_VARS, handler
        assert env_vars["POWERTOOLS_LOG_LEVEL"] == config.log_level
        assert env_vars["METRICS_SINK"] == "emf"


@pytest.mark.parametrize("env", ENVS)
def test_email_configuration_from_constructs(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    props, template = _functions(synthesized, env)["milequest.handlers.ses_events.handler"]
    variables = props["Environment"]["Variables"]
    assert set(variables) >= EMAIL_VARS
    assert variables["EMAIL_PROVIDER"] == "ses"
    assert variables["DEFAULT_FROM_EMAIL"] == config.from_address
    assert variables["SES_SANDBOX"] == ("true" if config.ses_sandbox else "false")
    config_set = next(
        lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::SES::ConfigurationSet"
    )
    assert variables["SES_CONFIGURATION_SET"] == {"Ref": config_set}
    assert variables["AWS_SES_REGION"] == "eu-west-1"


@pytest.mark.parametrize("env", ENVS)
def test_websocket_configuration_from_constructs(synthesized: Synthesized, env: str) -> None:
    functions = _functions(synthesized, env)
    _, template = functions["milequest.handlers.websocket.on_message"]
    by_type = {r["Type"]: lid for lid, r in template["Resources"].items()}
    table = by_type["AWS::DynamoDB::Table"]
    api = by_type["AWS::ApiGatewayV2::Api"]
    app_secret = next(
        lid
        for lid, r in template["Resources"].items()
        if r["Type"] == "AWS::SecretsManager::Secret" and "GenerateSecretString" in r["Properties"]
    )
    for name in ("authorize", "on_connect", "on_disconnect", "on_message"):
        props, _ = functions[f"milequest.handlers.websocket.{name}"]
        variables = props["Environment"]["Variables"]
        assert set(variables) >= WEBSOCKET_VARS, name
        assert variables["WEBSOCKET_PROVIDER"] == "apigateway"
        assert variables["CONNECTIONS_TABLE"] == {"Ref": table}
        assert variables["WEBSOCKET_SECRET_ARN"] == {"Ref": app_secret}
        endpoint = json.dumps(variables["APIGW_MANAGEMENT_ENDPOINT"])
        assert endpoint.startswith('{"Fn::Join": ["", ["https://", {"Ref": "' + api)
        assert ".execute-api.eu-west-1." in endpoint
        assert endpoint.endswith('/live"]]}')


@pytest.mark.parametrize("env", ENVS)
def test_each_function_has_its_own_role_without_managed_policies(
    synthesized: Synthesized, env: str
) -> None:
    roles = set()
    for props, template in _functions(synthesized, env).values():
        role_id = props["Role"]["Fn::GetAtt"][0]
        role = template["Resources"][role_id]["Properties"]
        assert "ManagedPolicyArns" not in role
        roles.add(role_id)
    assert len(roles) == 5
