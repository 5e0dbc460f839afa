"""The HTTP app (``milequest.web``) on Lambda behind an API Gateway HTTP API.

Stages without the container target serve the app this way: auth endpoints for pusher-js,
Pusher's HTTP API for server SDKs, webhooks. The API uses its ``$default`` stage, so paths
reach the app exactly as Pusher SDKs sign them (``/apps/{id}/events``, no stage prefix).
"""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53_targets as targets
from constructs import Construct

from .config import EnvironmentConfig
from .domains import certificate, publish_host
from .email import EmailStack
from .flags import FlagsStack
from .lambdas import RuntimeFunction, process_environment
from .nag import acknowledge
from .realtime import RealtimeStack

HTTP_HANDLER = "milequest.handlers.http.handler"
# POWERTOOLS_SERVICE_NAME of the HTTP app (the ``service`` dimension of its metrics).
PROCESS_NAME = "web"
HTTPS_PORT = 443

_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "integrationStatus": "$context.integrationStatus",
    "integrationLatency": "$context.integrationLatency",
    "error": "$context.error.message",
}


def http_app_environment(
    config: EnvironmentConfig, email: EmailStack, realtime: RealtimeStack
) -> dict[str, str]:
    """The settings of the HTTP app, wherever it runs (function or container); the flags'
    come with their grant (``RuntimeFunction``'s ``flags``, the container's task role).

    ``REALTIME_WS_*`` tell ``GET /realtime/config`` where pusher-js reaches the stage (its
    ``ws.`` host: without a custom domain there is none). ``REALTIME_CHANNEL_POLICY`` stays
    unset (deny): the application plugs in its own rule.
    """
    env = {
        **process_environment(config, PROCESS_NAME),
        **email.runtime_environment(),
        **realtime.runtime_environment(),
    }
    if config.custom_domain is not None:
        env |= {
            "REALTIME_WS_HOST": config.custom_domain.websocket_host,
            "REALTIME_WS_PORT": str(HTTPS_PORT),
            "REALTIME_WS_TLS": "true",
        }
    if config.migration.websocket_secondary_provider is not None:
        env["WEBSOCKET_SECONDARY_PROVIDER"] = config.migration.websocket_secondary_provider
    if config.web_cors_origins:
        env["WEB_CORS_ORIGINS"] = ",".join(config.web_cors_origins)
    return env


def http_app_outputs(stack: Stack, config: EnvironmentConfig, host: str) -> None:
    """Where Pusher's server SDKs and browsers reach the HTTP app (``PUSHER_*`` settings)."""
    for name, value, description in (
        ("HttpAppUrl", f"https://{host}", "The HTTP app: /realtime/auth, /apps/{id}/..., webhooks"),
        ("PusherHost", host, "PUSHER_HOST (host option of Pusher's server SDKs)"),
        ("PusherPort", str(HTTPS_PORT), "PUSHER_PORT"),
        ("PusherUseTls", "true", "PUSHER_USE_TLS"),
        ("PusherAppId", config.websocket_app_id, "PUSHER_APP_ID"),
    ):
        CfnOutput(stack, name, value=value, description=description)


class WebStack(Stack):
    """``milequest.handlers.http.handler`` (the app through Mangum) behind an HTTP API."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        email: EmailStack,
        realtime: RealtimeStack,
        flags: FlagsStack,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.config = config
        self.app_function = RuntimeFunction(
            self,
            "HttpApp",
            config=config,
            handler=HTTP_HANDLER,
            service=PROCESS_NAME,
            description="The HTTP app (milequest.web): auth endpoints, Pusher HTTP API, webhooks",
            environment=http_app_environment(config, email, realtime),
            timeout=Duration.seconds(29),
            memory_size=1024,
            flags=flags,
        )
        # The same rights as the container's task role.
        self.app_function.role.add_managed_policy(email.sender_policy)
        self.app_function.role.add_managed_policy(realtime.publisher_policy)
        # Webhooks and one-click unsubscribes add to the suppression list.
        email.suppression.grant_record(self.app_function.role)
        self.api = apigw.HttpApi(
            self,
            "HttpApi",
            api_name=f"{config.resource_prefix}-web",
            description=f"Mile Quest {config.name} HTTP app",
            default_integration=integrations.HttpLambdaIntegration(
                "App",
                self.app_function.alias,
                payload_format_version=apigw.PayloadFormatVersion.VERSION_2_0,
            ),
        )
        self._access_logs()
        acknowledge(
            self.api.node.find_child("DefaultRoute"),
            "APIG4",
            "The app authenticates each request itself: Pusher HTTP API signatures, the "
            "application's bearer tokens on the auth endpoints, signed webhooks.",
        )
        self.host = self._custom_domain() or (
            f"{self.api.api_id}.execute-api.{self.region}.{self.url_suffix}"
        )
        http_app_outputs(self, config, self.host)

    def _access_logs(self) -> None:
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=self.config.log_retention,
            removal_policy=self.config.cdk_removal_policy,
        )
        stage = self.api.default_stage
        assert stage is not None
        cfn_stage = stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn,
            format=json.dumps(_ACCESS_LOG_FORMAT, separators=(",", ":")),
        )

    def _custom_domain(self) -> str | None:
        domain = self.config.custom_domain
        if domain is None:
            return None
        host = domain.api_host
        name = apigw.DomainName(
            self,
            "ApiDomain",
            domain_name=host,
            certificate=certificate(self, "ApiCertificate", self.config, host),
            endpoint_type=apigw.EndpointType.REGIONAL,
            security_policy=apigw.SecurityPolicy.TLS_1_2,
        )
        assert self.api.default_stage is not None
        apigw.ApiMapping(
            self, "ApiMapping", api=self.api, domain_name=name, stage=self.api.default_stage
        )
        publish_host(
            self,
            "ApiDnsRecord",
            self.config,
            host,
            target=targets.ApiGatewayv2DomainProperties(
                name.regional_domain_name, name.regional_hosted_zone_id
            ),
            target_name=name.regional_domain_name,
        )
        return host
