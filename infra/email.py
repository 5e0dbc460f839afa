"""Email: the SES identity, configuration set, event topics, event handler and templates."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_ses as ses
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct
from milequest.services.email.templates import load_template_sources

from .config import EnvironmentConfig
from .flags import FlagsStack
from .keys import service_key
from .lambdas import RuntimeFunction
from .nag import acknowledge, acknowledge_validation, arn_prefix
from .suppression import LOOKUP_ACTIONS, SuppressionTable

SES_EVENTS_HANDLER = "milequest.handlers.ses_events.handler"
# POWERTOOLS_SERVICE_NAME of the SES event handler (the ``service`` dimension of metrics).
EVENTS_PROCESS_NAME = "ses-events"
# cfn-lint's W3694 expects a function for the lambda protocol; a subscription takes any
# function ARN, and the alias's qualified ARN is what SnapStart needs.
SNS_ALIAS_RULE = "CloudFormation-Validate::W3694"
SNS_ALIAS_REASON = (
    "SNS invokes the qualified ARN of the handler's alias: with SnapStart only published "
    "versions are snapshotted, and the invoke permission is granted on the alias."
)


@dataclass(frozen=True)
class EventTopicSpec:
    """One SNS topic receiving one kind of SES sending event."""

    construct_id: str
    event: ses.EmailSendingEvent


EVENT_TOPICS = (
    EventTopicSpec("Bounce", ses.EmailSendingEvent.BOUNCE),
    EventTopicSpec("Complaint", ses.EmailSendingEvent.COMPLAINT),
    EventTopicSpec("Delivery", ses.EmailSendingEvent.DELIVERY),
    EventTopicSpec("Reject", ses.EmailSendingEvent.REJECT),
    EventTopicSpec("DeliveryDelay", ses.EmailSendingEvent.DELIVERY_DELAY),
    EventTopicSpec("RenderingFailure", ses.EmailSendingEvent.RENDERING_FAILURE),
)

# Account-level SES calls the runtime makes (send quota, suppression list, identity
# listing): these actions have no resource-level permissions in IAM.
ACCOUNT_LEVEL_READS = (
    "ses:GetAccount",
    "ses:ListEmailIdentities",
    "ses:GetSuppressedDestination",
    "ses:ListSuppressedDestinations",
)


class EmailStack(Stack):
    """SES for one environment, plus the event pipeline that keeps the suppression list."""

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
        # SES template names are per account and region, which environments may share.
        self.template_prefix = f"{config.resource_prefix}-"
        self.configuration_set = ses.ConfigurationSet(
            self,
            "ConfigurationSet",
            configuration_set_name=config.resource_prefix,
            reputation_metrics=True,
            suppression_reasons=ses.SuppressionReasons.BOUNCES_AND_COMPLAINTS,
            tls_policy=ses.ConfigurationSetTlsPolicy.REQUIRE,
            sending_enabled=True,
        )
        # Identity.public_hosted_zone would verify the zone's apex, not a subdomain in it:
        # the records are published by _dns instead.
        self.domain_identity = ses.EmailIdentity(
            self,
            "DomainIdentity",
            identity=ses.Identity.domain(config.domain),
            mail_from_domain=config.mail_from_domain,
            configuration_set=self.configuration_set,
            dkim_signing=True,
        )
        self.sender_identities = [
            ses.EmailIdentity(
                self,
                f"Sender{index}",
                identity=ses.Identity.email(address),
                configuration_set=self.configuration_set,
            )
            for index, address in enumerate(config.sender_addresses if config.ses_sandbox else ())
        ]
        self._dns()
        # SES publishes to the encrypted topics, SNS moves undeliverable events to the DLQ.
        self.key = service_key(
            self,
            "EventsKey",
            config=config,
            description="SES event topics and their DLQ",
            services=("ses", "sns"),
        )
        self.topics = self._topics()
        self.dead_letter_queue = self._dead_letter_queue()
        # The suppression list every provider checks before sending (shared by processes).
        self.suppression = SuppressionTable(
            self, "SuppressionTable", removal_policy=config.cdk_removal_policy
        )
        self.event_handler = self._event_handler()
        self.template_names = self._templates()
        self.sender_policy = self._sender_policy()
        self._outputs()

    def _outputs(self) -> None:
        for name, value, description in (
            (
                "ConfigurationSetName",
                self.configuration_set.configuration_set_name,
                "SES_CONFIGURATION_SET for applications",
            ),
            (
                "SenderPolicyArn",
                self.sender_policy.managed_policy_arn,
                "Attach to an application role that sends this environment's mail",
            ),
            (
                "EventsDeadLetterQueueUrl",
                self.dead_letter_queue.queue_url,
                "SES events that could not be processed",
            ),
            (
                "SuppressionTableName",
                self.suppression.table.table_name,
                "EMAIL_SUPPRESSION_TABLE: the shared suppression list",
            ),
        ):
            CfnOutput(self, name, value=value, description=description)

    # DNS ------------------------------------------------------------------------------

    def _dns(self) -> None:
        """DKIM, MAIL FROM and DMARC records: in the hosted zone, else outputs to publish."""
        config = self.config
        dmarc = f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{config.domain}"
        records = [
            *(
                (f"DkimRecord{index}", "Easy DKIM", record.name, "CNAME", record.value)
                for index, record in enumerate(self.domain_identity.dkim_records, start=1)
            ),
            (
                "MailFromMxRecord",
                "Custom MAIL FROM",
                config.mail_from_domain,
                "MX",
                f"10 feedback-smtp.{self.region}.amazonses.com",
            ),
            (
                "MailFromSpfRecord",
                "Custom MAIL FROM (SPF)",
                config.mail_from_domain,
                "TXT",
                '"v=spf1 include:amazonses.com ~all"',
            ),
            (
                "DmarcRecord",
                "Recommended DMARC policy",
                f"_dmarc.{config.domain}",
                "TXT",
                f'"{dmarc}"',
            ),
        ]
        for construct_id, purpose, name, record_type, value in records:
            if config.hosted_zone is None:
                CfnOutput(
                    self,
                    construct_id,
                    description=f"{purpose}: publish this {record_type} record",
                    value=f"{name} {record_type} {value}",
                )
            else:
                route53.CfnRecordSet(
                    self,
                    construct_id,
                    hosted_zone_id=config.hosted_zone.zone_id,
                    name=name,
                    type=record_type,
                    resource_records=[value],
                    ttl="1800",
                )

    # Event pipeline -------------------------------------------------------------------

    def _topics(self) -> dict[str, sns.Topic]:
        topics: dict[str, sns.Topic] = {}
        for spec in EVENT_TOPICS:
            topic = sns.Topic(
                self,
                f"{spec.construct_id}Topic",
                display_name=f"{self.config.resource_prefix} SES {spec.event.value} events",
                master_key=self.key,
                enforce_ssl=True,
            )
            ses.ConfigurationSetEventDestination(
                self,
                f"{spec.construct_id}Destination",
                configuration_set=self.configuration_set,
                destination=ses.EventDestination.sns_topic(topic),
                events=[spec.event],
            )
            topics[spec.construct_id] = topic
        return topics

    def _dead_letter_queue(self) -> sqs.Queue:
        queue = sqs.Queue(
            self,
            "EventsDeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            # Undelivered SES events are data like the rest: prod keeps them.
            removal_policy=self.config.cdk_removal_policy,
        )
        acknowledge(
            queue,
            "SQS3",
            "This queue is itself the dead-letter queue of the SES event subscriptions and of "
            "the event handler's asynchronous invocations; it is alarmed on, not redriven.",
        )
        return queue

    def _event_handler(self) -> RuntimeFunction:
        config = self.config
        handler = RuntimeFunction(
            self,
            "SesEventHandler",
            config=config,
            handler=SES_EVENTS_HANDLER,
            service=EVENTS_PROCESS_NAME,
            description="Normalizes SES events and maintains the suppression list",
            environment=self.runtime_environment(),
            timeout=Duration.seconds(30),
            dead_letter_queue=self.dead_letter_queue,
            flags=self.flags,
        )
        # Lambda sends failed asynchronous invocations to the KMS-encrypted DLQ as the role.
        self.key.grant(handler.role, "kms:GenerateDataKey", "kms:Decrypt")
        self.suppression.grant_record(handler.role)
        handler.role.add_to_policy(
            iam.PolicyStatement(
                sid="SuppressionList",
                actions=["ses:PutSuppressedDestination", "ses:GetSuppressedDestination"],
                resources=["*"],
            )
        )
        acknowledge(
            handler.role,
            "IAM5",
            "ses:PutSuppressedDestination and ses:GetSuppressedDestination act on the "
            "account-level suppression list and support no resource-level permissions.",
            "Resource::*",
        )
        for topic in self.topics.values():
            topic.add_subscription(
                subscriptions.LambdaSubscription(
                    handler.alias, dead_letter_queue=self.dead_letter_queue
                )
            )
        # The subscriptions live under the alias.
        acknowledge_validation(handler.alias, SNS_ALIAS_RULE, SNS_ALIAS_REASON)
        return handler

    def runtime_environment(self) -> dict[str, str]:
        """The email settings of the runtime in this environment."""
        config = self.config
        return {
            "EMAIL_PROVIDER": config.email_provider,
            "DEFAULT_FROM_EMAIL": config.from_address,
            "AWS_SES_REGION": self.region,
            "SES_SANDBOX": "true" if config.ses_sandbox else "false",
            "SES_CONFIGURATION_SET": self.configuration_set.configuration_set_name,
            "SES_TEMPLATE_PREFIX": self.template_prefix,
            **self.suppression.environment,
        }

    # Templates and sending -------------------------------------------------------------

    def _templates(self) -> list[str]:
        """The runtime's template files as SES templates, named with the environment's prefix."""
        names = []
        for name, source in sorted(load_template_sources().items()):
            ses.CfnTemplate(
                self,
                f"Template-{name}",
                template=ses.CfnTemplate.TemplateProperty(
                    template_name=self.template_prefix + name,
                    subject_part=source.subject,
                    html_part=source.html,
                    text_part=source.text,
                ),
            )
            names.append(self.template_prefix + name)
        return names

    def _sender_policy(self) -> iam.ManagedPolicy:
        """What an application sending this environment's mail may do, and nothing more."""
        identities = [self.domain_identity.email_identity_arn] + [
            identity.email_identity_arn for identity in self.sender_identities
        ]
        configuration_set_arn = self.format_arn(
            service="ses",
            resource="configuration-set",
            resource_name=self.configuration_set.configuration_set_name,
        )
        templates = [
            self.format_arn(service="ses", resource="template", resource_name=name)
            for name in self.template_names
        ]
        any_identity = self.format_arn(service="ses", resource="identity", resource_name="*")
        send = ["ses:SendEmail", "ses:SendBulkEmail"]
        statements = [
            iam.PolicyStatement(
                sid="Send", actions=send, resources=[*identities, configuration_set_arn, *templates]
            ),
            iam.PolicyStatement(
                sid="ReadIdentities", actions=["ses:GetEmailIdentity"], resources=[any_identity]
            ),
            iam.PolicyStatement(
                sid="AccountLevelReads", actions=list(ACCOUNT_LEVEL_READS), resources=["*"]
            ),
            # The pre-send check of the shared suppression list.
            iam.PolicyStatement(
                sid="SuppressionList",
                actions=list(LOOKUP_ACTIONS),
                resources=[self.suppression.table.table_arn],
            ),
        ]
        if self.config.ses_sandbox:
            # In the sandbox SES also authorizes the send on each recipient's identity
            # (arn:...:identity/<recipient>), and every recipient must be one.
            statements.append(
                iam.PolicyStatement(sid="SandboxRecipients", actions=send, resources=[any_identity])
            )
        policy = iam.ManagedPolicy(
            self,
            "SenderPolicy",
            description=f"{self.config.resource_prefix}: send mail through SES",
            statements=statements,
        )
        acknowledge(
            policy,
            "IAM5",
            "Account-level SES reads (send quota, suppression list, identity listing) have "
            "no resource-level permissions. Any identity: sandbox recipient checks read "
            "identities, and in the sandbox SES authorizes sends on each recipient's identity; "
            "recipients there can only be the account's verified identities.",
            "Resource::*",
            f"Resource::{arn_prefix(self, 'ses')}:identity/*",
        )
        return policy
