"""Lambda functions: runtime, versions and aliases (SnapStart), logging, concurrency, settings."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

from infra.bundling import LAMBDA_RUNTIME
from infra.config import ENVIRONMENTS
from infra.lambdas import ALIAS_NAME

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
    "WEBSOCKET_APP_ID",
    "WEBSOCKET_ACTIVITY_TIMEOUT",
}
WEBSOCKET_HANDLERS = ("on_connect", "announce", "on_disconnect", "on_message")


def _functions(
    synthesized: Synthesized, env: str
) -> dict[str, tuple[str, dict[str, Any], dict[str, Any]]]:
    """Handler -> (logical id, properties, template) of every runtime function of ``env``,
    after checking that they are exactly the stage's handlers (no check runs on nothing)."""
    found = {}
    for stack in synthesized.stack_names(env):
        template = synthesized.template_json(env, stack)
        for logical_id, resource in resources(template, "AWS::Lambda::Function").items():
            props = resource["Properties"]
            if props.get("Handler", "").startswith("milequest."):
                found[props["Handler"]] = (logical_id, props, template)
    config = synthesized.stages[env].config
    http = set() if config.container.enabled else {"milequest.handlers.http.handler"}
    authorizer = (
        {"milequest.handlers.websocket.authorize"} if config.websocket_token_authorizer else set()
    )
    assert set(found) == {
        "milequest.handlers.ses_events.handler",
        *(f"milequest.handlers.websocket.{name}" for name in WEBSOCKET_HANDLERS),
        "milequest.handlers.fanout.handler",
        *http,
        *authorizer,
    }
    return found


def test_runtime_comes_from_the_bundling_module() -> None:
    assert LAMBDA_RUNTIME.name.startswith("python3.")
    assert LAMBDA_RUNTIME.supports_snap_start


@pytest.mark.parametrize("env", ENVS)
def test_every_handler_is_deployed(synthesized: Synthesized, env: str) -> None:
    # Six on the container target (the HTTP app runs there), seven elsewhere.
    assert len(_functions(synthesized, env)) == 6 + (not ENVIRONMENTS[env].container.enabled)


def test_every_handler_exists_in_the_runtime(synthesized: Synthesized) -> None:
    handlers = {h for env in ENVS for h in _functions(synthesized, env)}
    for handler in handlers:
        module, name = handler.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), name, None)), handler


@pytest.mark.parametrize("env", ENVS)
def test_runtime_architecture_logging_concurrency(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    for handler, (_, props, template) in _functions(synthesized, env).items():
        assert props["Runtime"] == LAMBDA_RUNTIME.name, handler
        assert props["Architectures"] == ["arm64"], handler
        assert props["LoggingConfig"]["LogFormat"] == "JSON"
        log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
        log_group = template["Resources"][log_group_id]["Properties"]
        assert log_group["RetentionInDays"] == config.log_retention_days
        # Off in the shipped config: accounts with a low quota refuse any reservation.
        assert "ReservedConcurrentExecutions" not in props
        env_vars = props["Environment"]["Variables"]
        assert set(env_vars) >= POWERTOOLS
        # Only variables the runtime reads: a misspelt setting would be silently ignored.
        assert set(env_vars) <= RUNTIME_VARS, handler
        assert env_vars["POWERTOOLS_LOG_LEVEL"] == config.log_level
        assert env_vars["METRICS_SINK"] == "emf"


def test_reserved_concurrency_is_an_opt_in(certified: Synthesized) -> None:
    functions = _functions(certified, "staging")
    assert functions
    for _, props, _ in functions.values():
        assert props["ReservedConcurrentExecutions"] == 5


@pytest.mark.parametrize("env", ENVS)
def test_versions_aliases_and_snapstart(synthesized: Synthesized, env: str) -> None:
    """Every function is invoked through a `live` alias on a published version; SnapStart
    snapshots those versions where the environment turns it on (staging, prod)."""
    snap_start = ENVIRONMENTS[env].snap_start
    for handler, (logical_id, props, template) in _functions(synthesized, env).items():
        if snap_start:
            assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}, handler
        else:
            assert "SnapStart" not in props, handler
        versions = [
            (vid, v)
            for vid, v in resources(template, "AWS::Lambda::Version").items()
            if v["Properties"]["FunctionName"] == {"Ref": logical_id}
        ]
        (version_id, version), *_ = versions
        assert len(versions) == 1
        assert version["DeletionPolicy"] == "Delete"
        (alias,) = [
            a["Properties"]
            for a in resources(template, "AWS::Lambda::Alias").values()
            if a["Properties"]["FunctionName"] == {"Ref": logical_id}
        ]
        assert alias["Name"] == ALIAS_NAME
        assert alias["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    assert [ENVIRONMENTS[e].snap_start for e in ENVS] == [False, True, True]


@pytest.mark.parametrize("env", ENVS)
def test_every_caller_targets_an_alias(synthesized: Synthesized, env: str) -> None:
    """Invoke permissions, integrations, authorizers and subscriptions name an alias, never the
    unqualified function (which SnapStart would not serve from a snapshot)."""
    through_alias: dict[tuple[str, str], int] = {}
    for stack in synthesized.stack_names(env):
        template = synthesized.template_json(env, stack)
        aliases = set(resources(template, "AWS::Lambda::Alias"))
        runtime_functions = {
            lid
            for lid, f in resources(template, "AWS::Lambda::Function").items()
            if f["Properties"].get("Handler", "").startswith("milequest.")
        }
        for kind, field in (
            ("AWS::Lambda::Permission", "FunctionName"),
            ("AWS::ApiGatewayV2::Integration", "IntegrationUri"),
            ("AWS::ApiGatewayV2::Authorizer", "AuthorizerUri"),
            ("AWS::SNS::Subscription", "Endpoint"),
            ("AWS::Lambda::EventSourceMapping", "FunctionName"),
        ):
            for resource in resources(template, kind).values():
                text = json.dumps(resource["Properties"].get(field, ""))
                for function in runtime_functions:
                    assert f'"{function}"' not in text, (kind, function)
                if any(f'"{alias}"' in text for alias in aliases):
                    key = (stack, kind.rsplit("::", 1)[1])
                    through_alias[key] = through_alias.get(key, 0) + 1
    expected = {
        # Six SES event topics: a subscription and an invoke permission each.
        ("Email", "Subscription"): 6,
        ("Email", "Permission"): 6,
        # $connect, $disconnect and the four message routes; the ping's MOCK has none.
        ("Realtime", "Permission"): 6,
        ("Realtime", "Integration"): 3,
        ("Realtime", "EventSourceMapping"): 1,  # the fan-out worker's shard queue
    }
    if not ENVIRONMENTS[env].container.enabled:
        expected |= {("Web", "Integration"): 1, ("Web", "Permission"): 1}
    assert through_alias == expected


@pytest.mark.parametrize("env", ENVS)
def test_email_configuration_from_constructs(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    _, props, template = _functions(synthesized, env)["milequest.handlers.ses_events.handler"]
    variables = props["Environment"]["Variables"]
    assert set(variables) >= EMAIL_VARS
    assert variables["EMAIL_PROVIDER"] == "ses"
    assert variables["DEFAULT_FROM_EMAIL"] == config.from_address
    assert variables["SES_SANDBOX"] == ("true" if config.ses_sandbox else "false")
    config_set = next(
        lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::SES::ConfigurationSet"
    )
    assert variables["SES_CONFIGURATION_SET"] == {"Ref": config_set}
    assert variables["AWS_SES_REGION"] == config.region


@pytest.mark.parametrize("env", ENVS)
def test_websocket_configuration_from_constructs(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    functions = _functions(synthesized, env)
    _, _, template = functions["milequest.handlers.websocket.on_message"]
    by_type = {r["Type"]: lid for lid, r in template["Resources"].items()}
    table = by_type["AWS::DynamoDB::Table"]
    api = by_type["AWS::ApiGatewayV2::Api"]
    app_secret = next(
        lid
        for lid, r in template["Resources"].items()
        if r["Type"] == "AWS::SecretsManager::Secret" and "GenerateSecretString" in r["Properties"]
    )
    for name in WEBSOCKET_HANDLERS:
        _, props, _ = functions[f"milequest.handlers.websocket.{name}"]
        variables = props["Environment"]["Variables"]
        assert set(variables) >= WEBSOCKET_VARS, name
        assert variables["WEBSOCKET_PROVIDER"] == "apigateway"
        assert variables["CONNECTIONS_TABLE"] == {"Ref": table}
        assert variables["WEBSOCKET_SECRET_ARN"] == {"Ref": app_secret}
        assert variables["WEBSOCKET_APP_ID"] == config.websocket_app_id
        assert variables["WEBSOCKET_ACTIVITY_TIMEOUT"] == str(config.websocket_activity_timeout)
        # The encryption master key lives in the app secret, never in the configuration.
        assert "WEBSOCKET_ENCRYPTION_MASTER_KEY" not in variables
        assert "PUSHER_SECRET_ARN" not in variables
        endpoint = json.dumps(variables["APIGW_MANAGEMENT_ENDPOINT"])
        assert endpoint.startswith('{"Fn::Join": ["", ["https://", {"Ref": "' + api)
        assert f".execute-api.{config.region}." in endpoint
        assert endpoint.endswith('/live"]]}')


@pytest.mark.parametrize("env", ENVS)
def test_each_function_has_its_own_role_without_aws_managed_policies(
    synthesized: Synthesized, env: str
) -> None:
    roles = set()
    for _, props, template in _functions(synthesized, env).values():
        role_id = props["Role"]["Fn::GetAtt"][0]
        role = template["Resources"][role_id]["Properties"]
        assert ":iam::aws:policy/" not in json.dumps(role.get("ManagedPolicyArns", []))
        roles.add(role_id)
    assert len(roles) == len(_functions(synthesized, env))
