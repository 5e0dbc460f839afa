"""The HTTP app on Lambda behind an HTTP API (stages without the container target)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import ENVIRONMENTS
from infra.realtime import pusher_js_options
from infra.web import HTTP_HANDLER

from .conftest import RUNTIME_VARS, Synthesized, only, realtime_config_options, resources

SERVERLESS = [env for env in ("dev", "staging", "prod") if not ENVIRONMENTS[env].container.enabled]


def _web(synthesized: Synthesized, env: str) -> dict[str, Any]:
    return synthesized.template_json(env, "Web")


def _app_function(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ((logical_id, function),) = [
        (lid, r["Properties"])
        for lid, r in resources(template, "AWS::Lambda::Function").items()
        if r["Properties"]["Handler"] == HTTP_HANDLER
    ]
    return logical_id, function


def test_serverless_stages_exist() -> None:
    assert SERVERLESS == ["dev", "staging"]


@pytest.mark.parametrize("env", SERVERLESS)
def test_http_api_default_stage_proxies_to_the_alias(synthesized: Synthesized, env: str) -> None:
    template = _web(synthesized, env)
    api_id, api = next(iter(resources(template, "AWS::ApiGatewayV2::Api").items()))
    assert api["Properties"]["ProtocolType"] == "HTTP"
    # $default: Pusher SDKs sign /apps/{id}/... exactly as they send it, with no stage prefix.
    stage = only(template, "AWS::ApiGatewayV2::Stage")
    assert stage["StageName"] == "$default"
    assert stage["AutoDeploy"] is True
    fields = json.loads(stage["AccessLogSettings"]["Format"])
    assert fields["path"] == "$context.path"
    (route,) = [r["Properties"] for r in resources(template, "AWS::ApiGatewayV2::Route").values()]
    assert route["RouteKey"] == "$default"
    integration = only(template, "AWS::ApiGatewayV2::Integration")
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert integration["PayloadFormatVersion"] == "2.0"
    function_id, _ = _app_function(template)
    (alias_id,) = [
        lid
        for lid, a in resources(template, "AWS::Lambda::Alias").items()
        if a["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert integration["IntegrationUri"] == {"Ref": alias_id}
    (permission,) = resources(template, "AWS::Lambda::Permission").values()
    assert permission["Properties"]["FunctionName"] == {"Ref": alias_id}
    assert f'{{"Ref": "{api_id}"}}' in json.dumps(permission["Properties"]["SourceArn"])


@pytest.mark.parametrize("env", SERVERLESS)
def test_app_settings_and_rights(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    template = _web(synthesized, env)
    _, function = _app_function(template)
    variables = function["Environment"]["Variables"]
    assert set(variables) <= RUNTIME_VARS
    assert variables["WEBSOCKET_PROVIDER"] == "apigateway"
    for name in ("CONNECTIONS_TABLE", "APIGW_MANAGEMENT_ENDPOINT", "WEBSOCKET_SECRET_ARN"):
        # Values of the Realtime stack, imported (strong references).
        assert "Fn::ImportValue" in json.dumps(variables[name]), name
    assert variables["WEBSOCKET_APP_ID"] == config.websocket_app_id
    assert variables["WEB_CORS_ORIGINS"] == ",".join(config.web_cors_origins)
    # Unset: the runtime denies private and presence channels until the app plugs in a rule.
    assert "REALTIME_CHANNEL_POLICY" not in variables
    assert variables["POWERTOOLS_SERVICE_NAME"] == "web"
    role_id = function["Role"]["Fn::GetAtt"][0]
    managed = json.dumps(template["Resources"][role_id]["Properties"]["ManagedPolicyArns"])
    assert "PublisherPolicy" in managed  # table, ManageConnections on the stage, secrets
    assert "SenderPolicy" in managed


@pytest.mark.parametrize("env", SERVERLESS)
def test_realtime_config_answers_the_stages_pusher_js_options(
    synthesized: Synthesized, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /realtime/config, run with the function's settings, gives pusher-js the same host,
    port and TLS as the Realtime stack's PusherJsOptions output."""
    config = ENVIRONMENTS[env]
    assert config.custom_domain is not None
    _, function = _app_function(_web(synthesized, env))
    variables = function["Environment"]["Variables"]
    assert variables["REALTIME_WS_HOST"] == config.custom_domain.websocket_host
    assert (variables["REALTIME_WS_PORT"], variables["REALTIME_WS_TLS"]) == ("443", "true")
    answered = realtime_config_options(variables, monkeypatch)
    assert answered is not None
    expected = pusher_js_options(config)
    for option in ("wsHost", "wsPort", "wssPort", "forceTLS", "enabledTransports"):
        assert answered[option] == expected[option], option


def test_without_custom_domain_realtime_config_has_no_host(
    bare: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ws. host: pusher-js cannot reach the stage, and the endpoint says so (503)."""
    _, function = _app_function(_web(bare, "dev"))
    variables = function["Environment"]["Variables"]
    assert not {"REALTIME_WS_HOST", "REALTIME_WS_PORT", "REALTIME_WS_TLS"} & set(variables)
    assert realtime_config_options(variables, monkeypatch) is None


@pytest.mark.parametrize("env", SERVERLESS)
def test_custom_domain_and_outputs(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    assert config.custom_domain is not None
    host = config.custom_domain.api_host
    template = _web(synthesized, env)
    domain_id, domain = next(iter(resources(template, "AWS::ApiGatewayV2::DomainName").items()))
    assert domain["Properties"]["DomainName"] == host
    mapping = only(template, "AWS::ApiGatewayV2::ApiMapping")
    assert mapping["Stage"] == "$default"
    assert "ApiMappingKey" not in mapping
    assert mapping["DomainName"] == {"Ref": domain_id}
    assert only(template, "AWS::CertificateManager::Certificate")["DomainName"] == host
    assert only(template, "AWS::Route53::RecordSet")["Name"] == f"{host}."
    outputs = {name: o["Value"] for name, o in template["Outputs"].items()}
    assert outputs["PusherHost"] == host
    assert outputs["PusherPort"] == "443"
    assert outputs["PusherUseTls"] == "true"
    assert outputs["PusherAppId"] == config.websocket_app_id
    assert outputs["HttpAppUrl"] == f"https://{host}"


def test_without_custom_domain_the_default_endpoint_is_the_host(bare: Synthesized) -> None:
    template = _web(bare, "dev")
    assert resources(template, "AWS::ApiGatewayV2::DomainName") == {}
    api_id = next(iter(resources(template, "AWS::ApiGatewayV2::Api")))
    host = template["Outputs"]["PusherHost"]["Value"]
    assert host["Fn::Join"][1][0] == {"Ref": api_id}
    assert host["Fn::Join"][1][1] == ".execute-api.eu-west-1."
