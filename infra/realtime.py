"""Realtime: the WebSocket API speaking Pusher's protocol 7, its handlers, table and secrets."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw_v1
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53_targets as targets
from constructs import Construct
from milequest.services.websocket.apigateway import TTL_ATTRIBUTE, table_definition

from .app_secrets import pusher_secret, websocket_app_secret
from .config import EnvironmentConfig
from .domains import certificate, publish_host
from .fanout import HANDLER as FANOUT_HANDLER
from .fanout import FanoutQueue
from .flags import FlagsStack
from .lambdas import RuntimeFunction
from .nag import acknowledge, arn_prefix

HANDLERS = "milequest.handlers.websocket"
# POWERTOOLS_SERVICE_NAME of the WebSocket handlers and of the fan-out workers (the
# ``service`` dimension of their metrics).
PROCESS_NAME = "websocket"
FANOUT_PROCESS_NAME = "fanout"
# A shard of 500 connections takes seconds; the worker stops starting deliveries 10 s
# before its timeout and queues the rest again.
FANOUT_TIMEOUT = Duration.seconds(60)
# Below API Gateway's 29 s integration timeout.
HANDLER_TIMEOUT = Duration.seconds(29)
# What a publisher needs of the shard queue (sqs:SendMessage covers SendMessageBatch).
FANOUT_ENQUEUE_ACTIONS = ["sqs:SendMessage"]
TOKEN_QUERY_PARAMETER = "token"
# Pusher frames carry their type in "event".
ROUTE_SELECTION = "$request.body.event"
# Frames with their own route (metrics and throttling per frame type); $default takes
# client events and anything unknown. Every one is two-way: the reply frame is the body.
MESSAGE_ROUTES = ("$default", "pusher:subscribe", "pusher:unsubscribe", "pusher:signin")
PING_ROUTE = "pusher:ping"
PONG_FRAME = json.dumps({"event": "pusher:pong", "data": "{}"}, separators=(",", ":"))
# A connection's first frame waits for the announce function, which Lambda retries on
# failure; past this age a retry is pointless (pusher-js has given up and reconnected).
ANNOUNCE_MAX_EVENT_AGE = Duration.seconds(60)
ANNOUNCE_RETRY_ATTEMPTS = 2
# pusher-js connects to wss://<host>/app/<key>: the custom domain maps that path to the stage.
APP_PATH_PREFIX = "app"
PUBLISH_WILDCARDS = (
    "Connections are found through the table's indexes and events go to any connection id "
    "of the stage: the wildcards are scoped to this table's indexes and this stage."
)

_ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "routeKey": "$context.routeKey",
    "eventType": "$context.eventType",
    "connectionId": "$context.connectionId",
    "status": "$context.status",
    "integrationStatus": "$context.integrationStatus",
    "integrationLatency": "$context.integrationLatency",
    "authorizeError": "$context.authorize.error",
    "error": "$context.error.message",
}


def _attribute_type(code: str) -> dynamodb.AttributeType:
    return {
        "S": dynamodb.AttributeType.STRING,
        "N": dynamodb.AttributeType.NUMBER,
        "B": dynamodb.AttributeType.BINARY,
    }[code]


def _keys(
    key_schema: list[dict[str, str]], types: dict[str, str]
) -> tuple[dynamodb.Attribute, dynamodb.Attribute | None]:
    """CreateTable's KeySchema as CDK partition / sort key attributes."""
    by_type = {entry["KeyType"]: entry["AttributeName"] for entry in key_schema}
    partition = dynamodb.Attribute(
        name=by_type["HASH"], type=_attribute_type(types[by_type["HASH"]])
    )
    sort_name = by_type.get("RANGE")
    sort = (
        dynamodb.Attribute(name=sort_name, type=_attribute_type(types[sort_name]))
        if sort_name
        else None
    )
    return partition, sort


def _projection(projection: dict[str, Any]) -> dict[str, Any]:
    kind = projection.get("ProjectionType", "ALL")
    if kind == "ALL":
        return {"projection_type": dynamodb.ProjectionType.ALL}
    if kind == "KEYS_ONLY":
        return {"projection_type": dynamodb.ProjectionType.KEYS_ONLY}
    return {
        "projection_type": dynamodb.ProjectionType.INCLUDE,
        "non_key_attributes": list(projection.get("NonKeyAttributes", [])),
    }


class RealtimeStack(Stack):
    """The WebSocket provider (``WEBSOCKET_PROVIDER=apigateway``) and both providers' secrets."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        flags: FlagsStack,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.config = config
        self.flags = flags
        self.table = self._table()
        self.websocket_secret = websocket_app_secret(self, config)
        self.pusher_secret = pusher_secret(self, config)
        self.api = apigw.WebSocketApi(
            self,
            "WebSocketApi",
            api_name=f"{config.resource_prefix}-realtime",
            description=f"Mile Quest {config.name} realtime channels (Pusher protocol 7)",
            route_selection_expression=ROUTE_SELECTION,
        )
        self.stage_name = config.websocket_stage_name
        self.callback_url = (
            f"https://{self.api.api_id}.execute-api.{self.region}.{self.url_suffix}/"
            f"{self.stage_name}"
        )
        # Channels above WEBSOCKET_FANOUT_THRESHOLD subscribers are delivered in shards.
        self.fanout_function = self._function(
            "FanoutWorker",
            FANOUT_HANDLER,
            "Delivers the shards of large channels",
            process=FANOUT_PROCESS_NAME,
            timeout=FANOUT_TIMEOUT,
        )
        self.fanout = FanoutQueue(
            self,
            "Fanout",
            worker=self.fanout_function.function,
            target=self.fanout_function.alias,
            reserved_concurrency=config.reserved_concurrency,
            removal_policy=config.cdk_removal_policy,
        )
        for name, value in self.fanout.environment.items():
            self.fanout_function.function.add_environment(name, value)
        self.announce_function = self._function(
            "Announce", "announce", "Pushes pusher:connection_established after $connect"
        )
        self.announce_function.alias.configure_async_invoke(
            max_event_age=ANNOUNCE_MAX_EVENT_AGE, retry_attempts=ANNOUNCE_RETRY_ATTEMPTS
        )
        self.connect_function = self._function(
            "Connect",
            "on_connect",
            "Stores connections and asks for their first frame",
            WEBSOCKET_ANNOUNCE_FUNCTION=self.announce_function.alias.function_arn,
        )
        self.disconnect_function = self._function(
            "Disconnect", "on_disconnect", "Removes connections and their subscriptions"
        )
        self.message_function = self._function(
            "Message", "on_message", "Answers Pusher frames: subscriptions, sign-in, client events"
        )
        self.authorizer_function = (
            self._function(
                "Authorizer",
                "authorize",
                "Verifies connection tokens on $connect",
                timeout=Duration.seconds(10),
            )
            if config.websocket_token_authorizer
            else None
        )
        self.functions = [
            fn
            for fn in (
                self.authorizer_function,
                self.connect_function,
                self.announce_function,
                self.disconnect_function,
                self.message_function,
                self.fanout_function,
            )
            if fn is not None
        ]
        self._routes()
        self.stage = self._stage()
        self._grants()
        self.publisher_policy = self._publisher_policy()
        self._custom_domain()
        self._outputs()

    def _outputs(self) -> None:
        for name, value, description in (
            ("WebSocketUrl", self.stage.url, "The stage's own endpoint (raw WebSocket clients)"),
            ("ManagementEndpoint", self.callback_url, "APIGW_MANAGEMENT_ENDPOINT"),
            ("ConnectionsTableName", self.table.table_name, "CONNECTIONS_TABLE"),
            ("FanoutQueueUrl", self.fanout.queue.queue_url, "WEBSOCKET_FANOUT_QUEUE_URL"),
            ("WebSocketSecretArn", self.websocket_secret.secret_arn, "WEBSOCKET_SECRET_ARN"),
            ("PusherSecretArn", self.pusher_secret.secret_arn, "PUSHER_SECRET_ARN"),
            ("PusherKey", self.config.websocket_app_key, "The app key pusher-js connects with"),
            (
                "PublisherPolicyArn",
                self.publisher_policy.managed_policy_arn,
                "Attach to an application role that publishes realtime events",
            ),
        ):
            CfnOutput(self, name, value=value, description=description)
        if self.config.custom_domain is not None:
            CfnOutput(
                self,
                "PusherJsOptions",
                value=json.dumps(pusher_js_options(self.config), separators=(",", ":")),
                description="new Pusher(PusherKey, <these options>) in a pusher-js front end",
            )

    # Data ------------------------------------------------------------------------------

    def _table(self) -> dynamodb.Table:
        definition = table_definition()
        types = {a["AttributeName"]: a["AttributeType"] for a in definition["AttributeDefinitions"]}
        partition, sort = _keys(definition["KeySchema"], types)
        if definition.get("BillingMode", "PAY_PER_REQUEST") != "PAY_PER_REQUEST":
            raise ValueError("the connections table is defined for on-demand billing")
        table = dynamodb.Table(
            self,
            "ConnectionsTable",
            partition_key=partition,
            sort_key=sort,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=TTL_ATTRIBUTE,
            removal_policy=self.config.cdk_removal_policy,
        )
        indexes = definition.get("GlobalSecondaryIndexes", [])
        self.table_indexes = tuple(index["IndexName"] for index in indexes)
        for index in indexes:
            index_partition, index_sort = _keys(index["KeySchema"], types)
            table.add_global_secondary_index(
                index_name=index["IndexName"],
                partition_key=index_partition,
                sort_key=index_sort,
                **_projection(index.get("Projection", {})),
            )
        return table

    # API -------------------------------------------------------------------------------

    def runtime_environment(self) -> dict[str, str]:
        """The realtime settings of the runtime in this environment."""
        return self._environment() | self.fanout.environment

    def _environment(self) -> dict[str, str]:
        config = self.config
        env = {
            "WEBSOCKET_PROVIDER": config.websocket_provider,
            "CONNECTIONS_TABLE": self.table.table_name,
            "APIGW_MANAGEMENT_ENDPOINT": self.callback_url,
            "WEBSOCKET_SECRET_ARN": self.websocket_secret.secret_arn,
            "WEBSOCKET_APP_ID": config.websocket_app_id,
            "WEBSOCKET_ACTIVITY_TIMEOUT": str(config.websocket_activity_timeout),
            "PUSHER_SECRET_ARN": self.pusher_secret.secret_arn,
            "PUSHER_CLUSTER": config.pusher_cluster,
        }
        if config.websocket_webhook_url is not None:
            env["WEBSOCKET_WEBHOOK_URL"] = str(config.websocket_webhook_url)
        return env

    def _function(
        self,
        construct_id: str,
        handler: str,
        description: str,
        *,
        process: str = PROCESS_NAME,
        timeout: Duration = HANDLER_TIMEOUT,
        **extra: str,
    ) -> RuntimeFunction:
        """A handler of this stack (``handler``: a name in the WebSocket handlers' module, or
        a full path); the fan-out worker's comes first, without the queue's URL."""
        env = self._environment() if process == FANOUT_PROCESS_NAME else self.runtime_environment()
        # The API Gateway handlers always use the API Gateway provider, whatever the
        # application publishes through.
        env["WEBSOCKET_PROVIDER"] = "apigateway"
        del env["PUSHER_SECRET_ARN"], env["PUSHER_CLUSTER"]
        return RuntimeFunction(
            self,
            construct_id,
            config=self.config,
            handler=handler if "." in handler else f"{HANDLERS}.{handler}",
            service=process,
            description=description,
            environment={**env, **extra},
            timeout=timeout,
            flags=self.flags,
        )

    def _routes(self) -> None:
        authorizer = (
            authorizers.WebSocketLambdaAuthorizer(
                "TokenAuthorizer",
                self.authorizer_function.alias,
                identity_source=[f"route.request.querystring.{TOKEN_QUERY_PARAMETER}"],
            )
            if self.authorizer_function is not None
            else None
        )
        self.api.add_route(
            "$connect",
            integration=integrations.WebSocketLambdaIntegration(
                "ConnectIntegration", self.connect_function.alias
            ),
            authorizer=authorizer,
        )
        self.api.add_route(
            "$disconnect",
            integration=integrations.WebSocketLambdaIntegration(
                "DisconnectIntegration", self.disconnect_function.alias
            ),
        )
        message = integrations.WebSocketLambdaIntegration(
            "MessageIntegration", self.message_function.alias
        )
        for route_key in MESSAGE_ROUTES:
            self.api.add_route(route_key, integration=message, return_response=True)
        self._ping_route()
        unauthorized = ["$disconnect", *MESSAGE_ROUTES, PING_ROUTE]
        if authorizer is None:
            unauthorized.append("$connect")
        for route_key in unauthorized:
            acknowledge(
                self.api.node.find_child(f"{route_key}-Route"),
                "APIG4",
                "Pusher connections are anonymous until channel auth or pusher:signin: every "
                "private and presence subscription and every sign-in carries its own HMAC "
                "signature, checked by the handler. API Gateway authorizers attach to $connect "
                "only (the opt-in token authorizer: websocket_token_authorizer).",
            )

    def _ping_route(self) -> None:
        """``pusher:ping`` answered by API Gateway itself: a MOCK integration, no Lambda.

        The request template makes the mock answer 200; the integration response renders the
        pong frame; the route response (two-way route) sends it back to the client.
        """
        self.api.add_route(
            PING_ROUTE,
            integration=integrations.WebSocketMockIntegration(
                "PingIntegration",
                request_templates={"$default": json.dumps({"statusCode": 200})},
                template_selection_expression="\\$default",
            ),
            return_response=True,
        )
        mock = next(
            child
            for child in self.api.node.find_all()
            if isinstance(child, apigw.CfnIntegration) and child.integration_type == "MOCK"
        )
        apigw.CfnIntegrationResponse(
            self,
            "PongResponse",
            api_id=self.api.api_id,
            integration_id=mock.ref,
            integration_response_key="$default",
            template_selection_expression="\\$default",
            response_templates={"$default": PONG_FRAME},
        )

    def _stage(self) -> apigw.WebSocketStage:
        throttle = self.config.websocket_throttle
        stage = apigw.WebSocketStage(
            self,
            "Stage",
            web_socket_api=self.api,
            stage_name=self.stage_name,
            auto_deploy=True,
        )
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=self.config.log_retention,
            removal_policy=self.config.cdk_removal_policy,
        )
        cfn_stage = stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn,
            format=json.dumps(_ACCESS_LOG_FORMAT, separators=(",", ":")),
        )
        # Throttling and execution logging for every route (WebSocketStage has no logging
        # level of its own).
        cfn_stage.default_route_settings = apigw.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=throttle.rate_limit,
            throttling_burst_limit=throttle.burst_limit,
            data_trace_enabled=False,
            detailed_metrics_enabled=False,
            logging_level="ERROR",
        )
        if self.config.manage_apigateway_account_role:
            cfn_stage.node.add_dependency(self._account_logging_role())
        return stage

    def _account_logging_role(self) -> apigw_v1.CfnAccount:
        """API Gateway's account-wide CloudWatch role, required for WebSocket stage logs."""
        role = iam.Role(
            self,
            "ApiGatewayLoggingRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AmazonAPIGatewayPushToCloudWatchLogs"
                )
            ],
        )
        acknowledge(
            role,
            "IAM4",
            "AmazonAPIGatewayPushToCloudWatchLogs is the documented policy for API Gateway's "
            "account-level logging role; API Gateway picks its own log group names.",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs",
        )
        account = apigw_v1.CfnAccount(self, "ApiGatewayAccount", cloud_watch_role_arn=role.role_arn)
        # The setting outlives this stack: deleting the role would break the logging of every
        # other stage in the account and region (what RestApi's cloudWatchRole does too).
        role.apply_removal_policy(RemovalPolicy.RETAIN)
        account.apply_removal_policy(RemovalPolicy.RETAIN)
        return account

    def _custom_domain(self) -> None:
        """``wss://<websocket_host>/app/<key>`` mapped to the stage (pusher-js's path)."""
        domain = self.config.custom_domain
        if domain is None:
            return
        host = domain.websocket_host
        name = apigw.DomainName(
            self,
            "WebSocketDomain",
            domain_name=host,
            certificate=certificate(self, "WebSocketCertificate", self.config, host),
            endpoint_type=apigw.EndpointType.REGIONAL,
            security_policy=apigw.SecurityPolicy.TLS_1_2,
        )
        # Multi-level mapping keys are allowed on regional domains with TLS 1.2.
        apigw.ApiMapping(
            self,
            "AppMapping",
            api=self.api,
            domain_name=name,
            stage=self.stage,
            api_mapping_key=f"{APP_PATH_PREFIX}/{self.config.websocket_app_key}",
        )
        publish_host(
            self,
            "WebSocketDnsRecord",
            self.config,
            host,
            target=targets.ApiGatewayv2DomainProperties(
                name.regional_domain_name, name.regional_hosted_zone_id
            ),
            target_name=name.regional_domain_name,
        )

    def _grants(self) -> None:
        if self.authorizer_function is not None:
            self.websocket_secret.grant_read(self.authorizer_function.role)
        for handler in (
            self.connect_function,
            self.announce_function,
            self.disconnect_function,
            self.message_function,
            self.fanout_function,
        ):
            self.websocket_secret.grant_read(handler.role)
            self.table.grant_read_write_data(handler.role)
            self.stage.grant_management_api_access(handler.role)
            # Events to a large channel (presence, client events) go out in shards.
            self.fanout.grant_enqueue(handler.role)
            acknowledge(handler.role, "IAM5", PUBLISH_WILDCARDS, *self._publish_findings())
        # $connect cannot post to its own connection: it hands the first frame to announce.
        self.announce_function.alias.grant_invoke(self.connect_function.role)

    def _publisher_policy(self) -> iam.ManagedPolicy:
        """What an application triggering events through this API may do (nothing more)."""
        table_arn = self.table.table_arn
        policy = iam.ManagedPolicy(
            self,
            "PublisherPolicy",
            description=f"{self.config.resource_prefix}: publish to realtime channels",
            statements=[
                iam.PolicyStatement(
                    sid="Connections",
                    actions=[
                        "dynamodb:GetItem",
                        "dynamodb:BatchGetItem",
                        "dynamodb:Query",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                        "dynamodb:BatchWriteItem",
                        "dynamodb:ConditionCheckItem",
                        "dynamodb:DescribeTable",
                    ],
                    resources=[table_arn, f"{table_arn}/index/*"],
                ),
                iam.PolicyStatement(
                    sid="ManageConnections",
                    actions=["execute-api:ManageConnections"],
                    resources=[
                        self.format_arn(
                            service="execute-api",
                            resource=self.api.api_id,
                            resource_name=f"{self.stage_name}/*/@connections/*",
                        )
                    ],
                ),
                iam.PolicyStatement(
                    sid="Secrets",
                    actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                    resources=[self.websocket_secret.secret_arn, self.pusher_secret.secret_arn],
                ),
                iam.PolicyStatement(
                    sid="FanoutShards",
                    actions=FANOUT_ENQUEUE_ACTIONS,
                    resources=[self.fanout.queue.queue_arn],
                ),
            ],
        )
        acknowledge(policy, "IAM5", PUBLISH_WILDCARDS, *self._publish_findings())
        return policy

    def _publish_findings(self) -> tuple[str, str]:
        """The IAM5 findings of publishing (table index and @connections wildcards)."""
        return (
            f"Resource::<{self.get_logical_id(self._table_cfn())}.Arn>/index/*",
            f"Resource::{arn_prefix(self, 'execute-api')}:"
            f"<{self.get_logical_id(self._api_cfn())}>/{self.stage_name}/*/@connections/*",
        )

    # Helpers ---------------------------------------------------------------------------

    def _table_cfn(self) -> dynamodb.CfnTable:
        cfn = self.table.node.default_child
        assert isinstance(cfn, dynamodb.CfnTable)
        return cfn

    def _api_cfn(self) -> apigw.CfnApi:
        cfn = self.api.node.default_child
        assert isinstance(cfn, apigw.CfnApi)
        return cfn


def pusher_js_options(config: EnvironmentConfig) -> dict[str, Any]:
    """What a pusher-js front end passes to ``new Pusher(key, options)`` for ``config``."""
    domain = config.custom_domain
    assert domain is not None
    api = f"https://{domain.api_host}"
    return {
        "cluster": config.name,  # required by pusher-js 8, unused when wsHost is set
        "wsHost": domain.websocket_host,
        "wsPort": 443,
        "wssPort": 443,
        "forceTLS": True,
        "enabledTransports": ["ws", "wss"],
        "channelAuthorization": {"endpoint": f"{api}/realtime/auth", "transport": "ajax"},
        "userAuthentication": {"endpoint": f"{api}/realtime/user-auth", "transport": "ajax"},
    }
