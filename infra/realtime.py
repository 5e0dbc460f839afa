"""Realtime: the API Gateway WebSocket API, its handlers, connections table and secrets."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, SecretValue, Stack
from aws_cdk import aws_apigateway as apigw_v1
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct
from milequest.services.websocket.apigateway import TTL_ATTRIBUTE, table_definition

from .config import EnvironmentConfig
from .lambdas import RuntimeFunction
from .nag import acknowledge, arn_prefix

HANDLERS = "milequest.handlers.websocket"
TOKEN_QUERY_PARAMETER = "token"
ROUTE_SELECTION = "$request.body.action"
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
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.config = config
        self.table = self._table()
        self.websocket_secret = self._websocket_secret()
        self.pusher_secret = self._pusher_secret()
        self.api = apigw.WebSocketApi(
            self,
            "WebSocketApi",
            api_name=f"{config.resource_prefix}-realtime",
            description=f"Mile Quest {config.name} realtime channels",
            route_selection_expression=ROUTE_SELECTION,
        )
        self.stage_name = config.websocket_stage_name
        self.callback_url = (
            f"https://{self.api.api_id}.execute-api.{self.region}.{self.url_suffix}/"
            f"{self.stage_name}"
        )
        self.authorizer_function = self._function(
            "Authorizer", "authorize", "Verifies connection tokens on $connect"
        )
        self.connect_function = self._function("Connect", "on_connect", "Stores connections")
        self.disconnect_function = self._function(
            "Disconnect", "on_disconnect", "Removes connections and their subscriptions"
        )
        self.message_function = self._function(
            "Message", "on_message", "Handles subscribe, unsubscribe, ping and client events"
        )
        self.functions = [
            self.authorizer_function,
            self.connect_function,
            self.disconnect_function,
            self.message_function,
        ]
        self._routes()
        self.stage = self._stage()
        self._grants()
        self.publisher_policy = self._publisher_policy()
        self._outputs()

    def _outputs(self) -> None:
        for name, value, description in (
            ("WebSocketUrl", self.stage.url, "Clients connect here with ?token=<token>"),
            ("ManagementEndpoint", self.callback_url, "APIGW_MANAGEMENT_ENDPOINT"),
            ("ConnectionsTableName", self.table.table_name, "CONNECTIONS_TABLE"),
            ("WebSocketSecretArn", self.websocket_secret.secret_arn, "WEBSOCKET_SECRET_ARN"),
            ("PusherSecretArn", self.pusher_secret.secret_arn, "PUSHER_SECRET_ARN"),
            (
                "PublisherPolicyArn",
                self.publisher_policy.managed_policy_arn,
                "Attach to an application role that publishes realtime events",
            ),
        ):
            CfnOutput(self, name, value=value, description=description)

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
        for index in definition.get("GlobalSecondaryIndexes", []):
            index_partition, index_sort = _keys(index["KeySchema"], types)
            table.add_global_secondary_index(
                index_name=index["IndexName"],
                partition_key=index_partition,
                sort_key=index_sort,
                **_projection(index.get("Projection", {})),
            )
        return table

    def _websocket_secret(self) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            "WebSocketAppSecret",
            description=(
                f"Mile Quest {self.config.name}: WebSocket app key and secret (channel auth, "
                "connection tokens, webhook signatures)"
            ),
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"key": self.config.resource_prefix}),
                generate_string_key="secret",
                exclude_punctuation=True,
                password_length=48,
            ),
            removal_policy=self.config.cdk_removal_policy,
        )
        acknowledge(
            secret,
            "SMG4",
            "Rotating the app secret invalidates every issued connection token and channel "
            "signature at once; it is rotated by hand during a maintenance window.",
        )
        return secret

    def _pusher_secret(self) -> secretsmanager.Secret:
        # Placeholders only: the operator puts the real Pusher credentials in after deploy.
        placeholder = {
            "app_id": "",
            "key": "",
            "secret": "",
            "cluster": self.config.pusher_cluster,
        }
        secret = secretsmanager.Secret(
            self,
            "PusherSecret",
            description=f"Mile Quest {self.config.name}: Pusher Channels credentials",
            secret_object_value={
                name: SecretValue.unsafe_plain_text(value) for name, value in placeholder.items()
            },
            removal_policy=self.config.cdk_removal_policy,
        )
        acknowledge(
            secret,
            "SMG4",
            "Pusher credentials are issued by Pusher; they are rotated in the Pusher dashboard "
            "and copied here, which Secrets Manager rotation cannot do.",
        )
        return secret

    # API -------------------------------------------------------------------------------

    def runtime_environment(self) -> dict[str, str]:
        """The realtime settings of the runtime in this environment."""
        env = {
            "WEBSOCKET_PROVIDER": self.config.websocket_provider,
            "CONNECTIONS_TABLE": self.table.table_name,
            "APIGW_MANAGEMENT_ENDPOINT": self.callback_url,
            "WEBSOCKET_SECRET_ARN": self.websocket_secret.secret_arn,
            "PUSHER_SECRET_ARN": self.pusher_secret.secret_arn,
        }
        if self.config.websocket_webhook_url is not None:
            env["WEBSOCKET_WEBHOOK_URL"] = str(self.config.websocket_webhook_url)
        return env

    def _function(self, construct_id: str, name: str, description: str) -> RuntimeFunction:
        env = self.runtime_environment()
        # The API Gateway handlers always use the API Gateway provider, whatever the
        # application publishes through.
        env["WEBSOCKET_PROVIDER"] = "apigateway"
        del env["PUSHER_SECRET_ARN"]
        return RuntimeFunction(
            self,
            construct_id,
            config=self.config,
            handler=f"{HANDLERS}.{name}",
            service="websocket",
            description=description,
            environment=env,
            timeout=Duration.seconds(10 if name == "authorize" else 29),
        )

    def _routes(self) -> None:
        authorizer = authorizers.WebSocketLambdaAuthorizer(
            "TokenAuthorizer",
            self.authorizer_function.function,
            identity_source=[f"route.request.querystring.{TOKEN_QUERY_PARAMETER}"],
        )
        self.api.add_route(
            "$connect",
            integration=integrations.WebSocketLambdaIntegration(
                "ConnectIntegration", self.connect_function.function
            ),
            authorizer=authorizer,
        )
        self.api.add_route(
            "$disconnect",
            integration=integrations.WebSocketLambdaIntegration(
                "DisconnectIntegration", self.disconnect_function.function
            ),
        )
        self.api.add_route(
            "$default",
            integration=integrations.WebSocketLambdaIntegration(
                "DefaultIntegration", self.message_function.function
            ),
            return_response=True,
        )
        for route in ("$disconnect", "$default"):
            acknowledge(
                self.api.node.find_child(f"{route}-Route"),
                "APIG4",
                "API Gateway attaches WebSocket authorizers to $connect only; every later "
                "message on the connection was authorized when it connected.",
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

    def _grants(self) -> None:
        self.websocket_secret.grant_read(self.authorizer_function.role)
        for handler in (self.connect_function, self.disconnect_function, self.message_function):
            self.websocket_secret.grant_read(handler.role)
            self.table.grant_read_write_data(handler.role)
            self.stage.grant_management_api_access(handler.role)
            acknowledge(handler.role, "IAM5", PUBLISH_WILDCARDS, *self._publish_findings())

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
