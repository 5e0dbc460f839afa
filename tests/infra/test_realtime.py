"""Realtime stack: WebSocket API, routes and authorizer, stage, connections table, secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from milequest.services.websocket.apigateway import TTL_ATTRIBUTE, table_definition

from infra.config import ENVIRONMENTS

from .conftest import Synthesized, only, resources

ENVS = ("dev", "staging", "prod")


def _realtime(synthesized: Synthesized, env: str) -> dict[str, Any]:
    return synthesized.template_json(env, "Realtime")


def _function_by_handler(template: dict[str, Any], handler: str) -> str:
    (logical_id,) = [
        lid
        for lid, r in resources(template, "AWS::Lambda::Function").items()
        if r["Properties"]["Handler"] == handler
    ]
    return logical_id


@pytest.mark.parametrize("env", ENVS)
def test_websocket_api_routes_and_authorizer(synthesized: Synthesized, env: str) -> None:
    template = _realtime(synthesized, env)
    api = only(template, "AWS::ApiGatewayV2::Api")
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"

    authorizer = only(template, "AWS::ApiGatewayV2::Authorizer")
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert authorizer["IdentitySource"] == ["route.request.querystring.token"]
    authorize_fn = _function_by_handler(template, "milequest.handlers.websocket.authorize")
    assert authorize_fn in json.dumps(authorizer["AuthorizerUri"])

    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in resources(template, "AWS::ApiGatewayV2::Route").values()
    }
    assert set(routes) == {"$connect", "$disconnect", "$default"}
    assert routes["$connect"]["AuthorizationType"] == "CUSTOM"
    assert routes["$disconnect"]["AuthorizationType"] == "NONE"

    integrations = resources(template, "AWS::ApiGatewayV2::Integration")
    handlers = {
        "$connect": "on_connect",
        "$disconnect": "on_disconnect",
        "$default": "on_message",
    }
    for route_key, name in handlers.items():
        target = routes[route_key]["Target"]["Fn::Join"][1][1]["Ref"]
        uri = json.dumps(integrations[target]["Properties"]["IntegrationUri"])
        assert _function_by_handler(template, f"milequest.handlers.websocket.{name}") in uri

    # Two-way $default: the handler's body goes back to the client.
    default_route = next(
        lid
        for lid, r in resources(template, "AWS::ApiGatewayV2::Route").items()
        if r["Properties"]["RouteKey"] == "$default"
    )
    assert routes["$default"]["RouteResponseSelectionExpression"] == "$default"
    route_response = only(template, "AWS::ApiGatewayV2::RouteResponse")
    assert route_response["RouteId"] == {"Ref": default_route}
    assert route_response["RouteResponseKey"] == "$default"


@pytest.mark.parametrize("env", ENVS)
def test_stage_access_logs_throttling_auto_deploy(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    template = _realtime(synthesized, env)
    stage = only(template, "AWS::ApiGatewayV2::Stage")
    assert stage["StageName"] == "live"
    assert stage["AutoDeploy"] is True
    log_groups = resources(template, "AWS::Logs::LogGroup")
    destination = stage["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert log_groups[destination]["Properties"]["RetentionInDays"] == config.log_retention_days
    fields = json.loads(stage["AccessLogSettings"]["Format"])
    assert fields["connectionId"] == "$context.connectionId"
    assert fields["routeKey"] == "$context.routeKey"
    settings = stage["DefaultRouteSettings"]
    assert settings["ThrottlingRateLimit"] == config.websocket_throttle.rate_limit
    assert settings["ThrottlingBurstLimit"] == config.websocket_throttle.burst_limit
    # Execution logs hold errors only, never message bodies (tokens, channel data).
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False
    # Stage logging needs API Gateway's account-level CloudWatch role, which is shared by
    # every stage in the account and region: it stays when a (dev) stack is destroyed.
    (account,) = resources(template, "AWS::ApiGateway::Account").values()
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    assert account["DeletionPolicy"] == "Retain"
    assert template["Resources"][role_id]["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("env", ENVS)
def test_connections_table_from_runtime_definition(synthesized: Synthesized, env: str) -> None:
    definition = table_definition()
    table = only(_realtime(synthesized, env), "AWS::DynamoDB::Table")
    assert table["KeySchema"] == definition["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == sorted(
        definition["AttributeDefinitions"], key=lambda a: a["AttributeName"]
    )
    assert table["BillingMode"] == definition["BillingMode"]
    assert table["GlobalSecondaryIndexes"] == definition["GlobalSecondaryIndexes"]
    assert table["TimeToLiveSpecification"] == {
        "AttributeName": TTL_ATTRIBUTE,
        "Enabled": True,
    }
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}


def test_table_retained_in_prod_only(synthesized: Synthesized) -> None:
    for env in ENVS:
        template = _realtime(synthesized, env)
        (table,) = resources(template, "AWS::DynamoDB::Table").values()
        expected = "Retain" if ENVIRONMENTS[env].removal_policy == "retain" else "Delete"
        assert table["DeletionPolicy"] == expected


@pytest.mark.parametrize("env", ENVS)
def test_secrets(synthesized: Synthesized, env: str) -> None:
    secrets = [
        r["Properties"]
        for r in resources(_realtime(synthesized, env), "AWS::SecretsManager::Secret").values()
    ]
    generated = [s for s in secrets if "GenerateSecretString" in s]
    (app_secret,) = generated
    spec = app_secret["GenerateSecretString"]
    assert spec["GenerateStringKey"] == "secret"
    assert json.loads(spec["SecretStringTemplate"]) == {"key": f"milequest-{env}"}
    (pusher,) = [s for s in secrets if "SecretString" in s]
    placeholder = json.loads(pusher["SecretString"])
    assert set(placeholder) == {"app_id", "key", "secret", "cluster"}
    assert placeholder["secret"] == ""


@pytest.mark.parametrize("env", ENVS)
def test_management_api_access_scoped_to_the_stage(synthesized: Synthesized, env: str) -> None:
    template = _realtime(synthesized, env)
    api_id = next(iter(resources(template, "AWS::ApiGatewayV2::Api")))
    grants = []
    policies = resources(template, "AWS::IAM::Policy") | resources(
        template, "AWS::IAM::ManagedPolicy"
    )
    for policy in policies.values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Action"] == "execute-api:ManageConnections":
                grants.append(json.dumps(statement["Resource"]))
    # connect, disconnect, message (not the authorizer) and the publisher policy
    assert len(grants) == 4
    for resource in grants:
        assert f'{{"Ref": "{api_id}"}}' in resource
        assert "/live/*/@connections/*" in resource


def test_webhook_url_and_shared_account_role_follow_config(
    synthesized: Synthesized, zoned: Synthesized
) -> None:
    template = zoned.template_json("staging", "Realtime")
    for fn in resources(template, "AWS::Lambda::Function").values():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables["WEBSOCKET_WEBHOOK_URL"] == "https://hooks.milequest.app/pusher"
    assert resources(template, "AWS::ApiGateway::Account") == {}
    default = _realtime(synthesized, "staging")
    for fn in resources(default, "AWS::Lambda::Function").values():
        assert "WEBSOCKET_WEBHOOK_URL" not in fn["Properties"]["Environment"]["Variables"]


@pytest.mark.parametrize("env", ENVS)
def test_outputs_for_operators(synthesized: Synthesized, env: str) -> None:
    outputs = _realtime(synthesized, env)["Outputs"]
    assert {
        "WebSocketUrl",
        "ManagementEndpoint",
        "ConnectionsTableName",
        "WebSocketSecretArn",
        "PusherSecretArn",
        "PublisherPolicyArn",
    } <= set(outputs)
    url = json.dumps(outputs["WebSocketUrl"]["Value"])
    assert url.startswith('{"Fn::Join": ["", ["wss://"')
    assert url.endswith('/live"]]}')
