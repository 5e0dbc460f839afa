"""The shared email suppression list: its DynamoDB table, the grants, and the HTTPS webhook.

The table is built from the runtime's one definition
(``milequest.services.email.suppression_dynamodb.table_definition``), as the local stack's
is. Processes find it through ``EMAIL_SUPPRESSION_TABLE``.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from milequest.services.email.suppression_dynamodb import table_definition

ENVIRONMENT_VARIABLE = "EMAIL_SUPPRESSION_TABLE"

# What each kind of process does with the list (the runtime's calls, nothing more).
LOOKUP_ACTIONS = ("dynamodb:BatchGetItem", "dynamodb:GetItem")  # every send
RECORD_ACTIONS = (*LOOKUP_ACTIONS, "dynamodb:PutItem", "dynamodb:DeleteItem")  # events, unsubscribe
MANAGE_ACTIONS = (*RECORD_ACTIONS, "dynamodb:Scan")  # listing, CSV export, imports


def _attribute(name: str, types: dict[str, str]) -> dynamodb.Attribute:
    kinds = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}
    return dynamodb.Attribute(name=name, type=kinds[types[name]])


class SuppressionTable(Construct):
    """The suppression table (on demand, encrypted, point-in-time recovery) and its grants."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        definition = table_definition()
        if definition.get("BillingMode") != "PAY_PER_REQUEST":
            raise ValueError("the suppression table is defined for on-demand billing")
        types = {a["AttributeName"]: a["AttributeType"] for a in definition["AttributeDefinitions"]}
        keys = {k["KeyType"]: k["AttributeName"] for k in definition["KeySchema"]}
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=_attribute(keys["HASH"], types),
            sort_key=_attribute(keys["RANGE"], types),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=removal_policy,
        )

    @property
    def environment(self) -> dict[str, str]:
        """The variable that points the runtime at this table."""
        return {ENVIRONMENT_VARIABLE: self.table.table_name}

    def grant_lookup(self, grantee: iam.IGrantable) -> iam.Grant:
        """For processes that send mail: the pre-send check."""
        return self.table.grant(grantee, *LOOKUP_ACTIONS)

    def grant_record(self, grantee: iam.IGrantable) -> iam.Grant:
        """For event handlers and the HTTP app: the check, and entries added or removed."""
        return self.table.grant(grantee, *RECORD_ACTIONS)

    def grant_manage(self, grantee: iam.IGrantable) -> iam.Grant:
        """For operators (the CLI, the console): everything above, and listing."""
        return self.table.grant(grantee, *MANAGE_ACTIONS)

    def attach(self, function: lambda_.Function, *, record: bool = False) -> None:
        """Point ``function`` at the table and grant it the lookup (``record``: and writes)."""
        for name, value in self.environment.items():
            function.add_environment(name, value)
        if record:
            self.grant_record(function)
        else:
            self.grant_lookup(function)


def subscribe_https_webhook(
    topics: Iterable[sns.ITopic], url: str, *, dead_letter_queue: sqs.IQueue | None = None
) -> None:
    """Deliver the SES event topics to ``POST /webhooks/ses`` at ``url`` (HTTPS), instead of
    (or beside) the Lambda handler. The app confirms the subscriptions itself, for the
    topics in its ``SES_EVENTS_TOPIC_ARNS``, and verifies every message's signature."""
    if not url.startswith("https://"):
        raise ValueError("SNS delivers the SES events over HTTPS only: give an https:// URL")
    for topic in topics:
        topic.add_subscription(
            subscriptions.UrlSubscription(
                url,
                protocol=sns.SubscriptionProtocol.HTTPS,
                raw_message_delivery=False,  # the signed envelope is what the app verifies
                dead_letter_queue=dead_letter_queue,
            )
        )
