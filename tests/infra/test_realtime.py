"""Realtime stack: the Pusher-protocol routes, the announce function, the custom domain,
the stage, the connections table and the outputs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from milequest.services.websocket.apigateway import TTL_ATTRIBUTE, table_definition

from infra.config import ENVIRONMENTS
from infra.realtime import pusher_js_options

from .conftest import CERTIFICATE_ARN, Synthesized, only, resources

ENVS = ("dev", "staging", "prod")
MESSAGE_ROUTES = {"$default", "pusher:subscribe", "pusher:unsubscribe", "pusher:signin"}


def _realtime(synthesized: Synthesized, env: str) -> dict[str, Any]:
    return synthesized.template_json(env, "Realtime")


def _function_by_handler(template: dict[str, Any], handler: str) -> str:
    (logical_id,) = [
        lid
        for lid, r in resources(template, "AWS::Lambda::Function").items()
        if r["Properties"]["Handler"] == handler
    ]
    return logical_id


def _alias_of(template: dict[str, Any], handler: str) -> str:
    function = _function_by_handler(template, f"milequest.handlers.websocket.{handler}")
    (alias,) = [
        lid
        for lid, r in resources(template, "AWS::Lambda::Alias").items()
        if r["Properties"]["FunctionName"] == {"Ref": function}
    ]
    return alias


def _routes(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        r["Properties"]["RouteKey"]: (lid, r["Properties"])
        for lid, r in resources(template, "AWS::ApiGatewayV2::Route").items()
    }


def _integration(template: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    target = route["Target"]["Fn::Join"][1][1]["Ref"]
    properties: dict[str, Any] = template["Resources"][target]["Properties"]
    return properties


@pytest.mark.parametrize("env", ENVS)
def test_routes_select_on_the_pusher_event(synthesized: Synthesized, env: str) -> None:
    template = _realtime(synthesized, env)
    api = only(template, "AWS::ApiGatewayV2::Api")
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.event"
    routes = _routes(template)
    assert set(routes) == {"$connect", "$disconnect", "pusher:ping"} | MESSAGE_ROUTES
    handlers = {"$connect": "on_connect", "$disconnect": "on_disconnect"} | dict.fromkeys(
        MESSAGE_ROUTES, "on_message"
    )
    for route_key, name in handlers.items():
        integration = _integration(template, routes[route_key][1])
        assert integration["IntegrationType"] == "AWS_PROXY"
        # Through the alias (SnapStart snapshots published versions only).
        assert {"Ref": _alias_of(template, name)} in integration["IntegrationUri"]["Fn::Join"][1]


@pytest.mark.parametrize("env", ENVS)
def test_message_routes_are_two_way(synthesized: Synthesized, env: str) -> None:
    """The handler's reply frame (its body) goes back to the client on every message route."""
    template = _realtime(synthesized, env)
    routes = _routes(template)
    responses = {
        r["Properties"]["RouteId"]["Ref"]: r["Properties"]
        for r in resources(template, "AWS::ApiGatewayV2::RouteResponse").values()
    }
    for route_key in [*MESSAGE_ROUTES, "pusher:ping"]:
        logical_id, route = routes[route_key]
        assert route["RouteResponseSelectionExpression"] == "$default"
        assert responses[logical_id]["RouteResponseKey"] == "$default"
    for route_key in ("$connect", "$disconnect"):
        assert "RouteResponseSelectionExpression" not in routes[route_key][1]


@pytest.mark.parametrize("env", ENVS)
def test_ping_is_answered_by_a_mock_integration(synthesized: Synthesized, env: str) -> None:
    template = _realtime(synthesized, env)
    _, ping = _routes(template)["pusher:ping"]
    target = ping["Target"]["Fn::Join"][1][1]["Ref"]
    mock = template["Resources"][target]["Properties"]
    assert mock["IntegrationType"] == "MOCK"
    # The request template makes the mock answer 200 for any message...
    assert mock["TemplateSelectionExpression"] == "\\$default"
    assert json.loads(mock["RequestTemplates"]["$default"]) == {"statusCode": 200}
    # ...and the integration response renders the pong frame pusher-js expects.
    response = only(template, "AWS::ApiGatewayV2::IntegrationResponse")
    assert response["IntegrationId"] == {"Ref": target}
    assert response["IntegrationResponseKey"] == "$default"
    assert response["TemplateSelectionExpression"] == "\\$default"
    pong = json.loads(response["ResponseTemplates"]["$default"])
    assert pong == {"event": "pusher:pong", "data": "{}"}
    assert json.loads(pong["data"]) == {}


@pytest.mark.parametrize("env", ENVS)
def test_connect_is_anonymous_by_default(synthesized: Synthesized, env: str) -> None:
    template = _realtime(synthesized, env)
    assert not ENVIRONMENTS[env].websocket_token_authorizer
    assert resources(template, "AWS::ApiGatewayV2::Authorizer") == {}
    assert _routes(template)["$connect"][1]["AuthorizationType"] == "NONE"
    handlers = {
        r["Properties"]["Handler"] for r in resources(template, "AWS::Lambda::Function").values()
    }
    assert "milequest.handlers.websocket.authorize" not in handlers


def test_the_token_authorizer_is_an_opt_in(bare: Synthesized) -> None:
    template = _realtime(bare, "dev")
    authorizer = only(template, "AWS::ApiGatewayV2::Authorizer")
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert authorizer["IdentitySource"] == ["route.request.querystring.token"]
    assert {"Ref": _alias_of(template, "authorize")} in authorizer["AuthorizerUri"]["Fn::Join"][1]
    assert _routes(template)["$connect"][1]["AuthorizationType"] == "CUSTOM"


@pytest.mark.parametrize("env", ENVS)
def test_connect_hands_the_first_frame_to_announce(synthesized: Synthesized, env: str) -> None:
    template = _realtime(synthesized, env)
    announce_alias = _alias_of(template, "announce")
    connect = template["Resources"][
        _function_by_handler(template, "milequest.handlers.websocket.on_connect")
    ]["Properties"]
    assert connect["Environment"]["Variables"]["WEBSOCKET_ANNOUNCE_FUNCTION"] == {
        "Ref": announce_alias
    }
    # The connect role may invoke exactly that alias, nothing else.
    role = connect["Role"]["Fn::GetAtt"][0]
    invokes = [
        statement
        for policy in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in json.dumps(statement["Action"])
    ]
    (invoke,) = invokes
    assert invoke["Resource"] == {"Ref": announce_alias}
    # Lambda's retries stay (a lost announce strands a client), but only for a short while.
    config = only(template, "AWS::Lambda::EventInvokeConfig")
    assert config["MaximumRetryAttempts"] == 2
    assert config["MaximumEventAgeInSeconds"] == 60
    assert json.dumps({"Ref": announce_alias}) in json.dumps(config["Qualifier"])


@pytest.mark.parametrize("env", ENVS)
def test_custom_domain_maps_the_pusher_path_to_the_stage(
    synthesized: Synthesized, env: str
) -> None:
    config = ENVIRONMENTS[env]
    assert config.custom_domain is not None
    assert config.hosted_zone is not None
    host = config.custom_domain.websocket_host
    template = _realtime(synthesized, env)
    domain_id, domain = next(iter(resources(template, "AWS::ApiGatewayV2::DomainName").items()))
    assert domain["Properties"]["DomainName"] == host
    (configuration,) = domain["Properties"]["DomainNameConfigurations"]
    assert configuration["EndpointType"] == "REGIONAL"
    assert configuration["SecurityPolicy"] == "TLS_1_2"
    certificate = only(template, "AWS::CertificateManager::Certificate")
    assert certificate["DomainName"] == host
    assert certificate["ValidationMethod"] == "DNS"
    assert configuration["CertificateArn"]["Ref"] in resources(
        template, "AWS::CertificateManager::Certificate"
    )
    mapping = only(template, "AWS::ApiGatewayV2::ApiMapping")
    # wss://<host>/app/<key> reaches the stage, as pusher-js builds it.
    assert mapping["ApiMappingKey"] == f"app/{config.websocket_app_key}"
    assert mapping["DomainName"] == {"Ref": domain_id}
    assert mapping["Stage"] == "live"
    record = only(template, "AWS::Route53::RecordSet")
    assert record["Name"] == f"{host}."
    assert record["HostedZoneId"] == config.hosted_zone.zone_id
    assert record["AliasTarget"]["DNSName"] == {"Fn::GetAtt": [domain_id, "RegionalDomainName"]}


def test_imported_certificate_without_zone_outputs_the_record(certified: Synthesized) -> None:
    template = _realtime(certified, "staging")
    assert resources(template, "AWS::CertificateManager::Certificate") == {}
    assert resources(template, "AWS::Route53::RecordSet") == {}
    domain = only(template, "AWS::ApiGatewayV2::DomainName")
    (configuration,) = domain["DomainNameConfigurations"]
    assert configuration["CertificateArn"] == CERTIFICATE_ARN
    record = template["Outputs"]["WebSocketDnsRecord"]["Value"]
    assert record["Fn::Join"][1][0] == "ws.staging.milequest.app CNAME "


def test_without_custom_domain_no_pusher_js_options(bare: Synthesized) -> None:
    """The default execute-api endpoint cannot serve /app/<key> (docs/operations.md)."""
    template = _realtime(bare, "dev")
    assert resources(template, "AWS::ApiGatewayV2::DomainName") == {}
    assert "PusherJsOptions" not in template["Outputs"]
    assert "WebSocketUrl" in template["Outputs"]


@pytest.mark.parametrize("env", ENVS)
def test_outputs_give_the_exact_pusher_js_options(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    assert config.custom_domain is not None
    outputs = _realtime(synthesized, env)["Outputs"]
    options = json.loads(outputs["PusherJsOptions"]["Value"])
    assert options == pusher_js_options(config)
    api = f"https://{config.custom_domain.api_host}"
    assert options["wsHost"] == config.custom_domain.websocket_host
    assert (options["wsPort"], options["wssPort"], options["forceTLS"]) == (443, 443, True)
    assert options["enabledTransports"] == ["ws", "wss"]
    assert options["channelAuthorization"]["endpoint"] == f"{api}/realtime/auth"
    assert options["userAuthentication"]["endpoint"] == f"{api}/realtime/user-auth"
    assert options["cluster"]  # pusher-js 8 refuses options without one
    assert outputs["PusherKey"]["Value"] == config.websocket_app_key
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


def test_account_logging_role_only_where_configured(
    synthesized: Synthesized, certified: Synthesized
) -> None:
    """API Gateway's account-level CloudWatch role, shared by every stage of the account and
    region: one stage manages it and keeps it when destroyed."""
    # dev for the non-prod account, prod for its own.
    assert [ENVIRONMENTS[env].manage_apigateway_account_role for env in ENVS] == [
        True,
        False,
        True,
    ]
    for env in ENVS:
        template = _realtime(synthesized, env)
        accounts = resources(template, "AWS::ApiGateway::Account")
        assert len(accounts) == int(ENVIRONMENTS[env].manage_apigateway_account_role)
        for account in accounts.values():
            role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
            assert account["DeletionPolicy"] == "Retain"
            assert template["Resources"][role_id]["DeletionPolicy"] == "Retain"
    assert resources(_realtime(certified, "staging"), "AWS::ApiGateway::Account") == {}


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
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}


def test_table_retained_in_prod_only(synthesized: Synthesized) -> None:
    for env in ENVS:
        (table,) = resources(_realtime(synthesized, env), "AWS::DynamoDB::Table").values()
        expected = "Retain" if ENVIRONMENTS[env].removal_policy == "retain" else "Delete"
        assert table["DeletionPolicy"] == expected


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
    # connect, announce, disconnect, message, the fan-out worker and the publisher policy
    assert len(grants) == 6
    for resource in grants:
        assert f'{{"Ref": "{api_id}"}}' in resource
        assert "/live/*/@connections/*" in resource


def test_webhook_url_follows_config(synthesized: Synthesized, certified: Synthesized) -> None:
    template = _realtime(certified, "staging")
    functions = [
        fn
        for fn in resources(template, "AWS::Lambda::Function").values()
        if fn["Properties"]["Handler"].startswith("milequest.")
    ]
    assert len(functions) == 5
    for fn in functions:
        variables = fn["Properties"]["Environment"]["Variables"]
        assert variables["WEBSOCKET_WEBHOOK_URL"] == "https://hooks.milequest.app/pusher"
    shipped = resources(_realtime(synthesized, "staging"), "AWS::Lambda::Function").values()
    # The five handlers and the secret filler.
    assert len(shipped) == 6
    for fn in shipped:
        assert "WEBSOCKET_WEBHOOK_URL" not in fn["Properties"].get("Environment", {}).get(
            "Variables", {}
        )


@pytest.mark.parametrize("env", ENVS)
def test_large_channels_fan_out_through_the_shard_queue(synthesized: Synthesized, env: str) -> None:
    """The worker consumes the shard queue through its alias; every process that triggers
    events knows the queue and may send to it, nothing else may."""
    template = _realtime(synthesized, env)
    queues = resources(template, "AWS::SQS::Queue")
    (queue_id,) = [lid for lid, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    worker = _function_by_handler(template, "milequest.handlers.fanout.handler")
    props = template["Resources"][worker]["Properties"]
    variables = props["Environment"]["Variables"]
    assert variables["WEBSOCKET_FANOUT_QUEUE_URL"] == {"Ref": queue_id}
    assert variables["WEBSOCKET_PROVIDER"] == "apigateway"
    assert variables["POWERTOOLS_SERVICE_NAME"] == "fanout"
    assert props["Timeout"] == 60
    mapping = only(template, "AWS::Lambda::EventSourceMapping")
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    (alias,) = [
        lid
        for lid, a in resources(template, "AWS::Lambda::Alias").items()
        if a["Properties"]["FunctionName"] == {"Ref": worker}
    ]
    assert alias in json.dumps(mapping["FunctionName"])
    senders = set()
    for lid, policy in (
        resources(template, "AWS::IAM::Policy") | resources(template, "AWS::IAM::ManagedPolicy")
    ).items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}:
                actions = statement["Action"]
                if "sqs:SendMessage" in (actions if isinstance(actions, list) else [actions]):
                    senders.add(lid)
    # The five handlers' policies (the worker queues remainders) and the publisher policy.
    assert len(senders) == 6
    assert any("PublisherPolicy" in lid for lid in senders)
    for name in ("on_connect", "announce", "on_disconnect", "on_message"):
        handler = template["Resources"][
            _function_by_handler(template, f"milequest.handlers.websocket.{name}")
        ]["Properties"]
        assert handler["Environment"]["Variables"]["WEBSOCKET_FANOUT_QUEUE_URL"] == {
            "Ref": queue_id
        }, name
