"""Migration flags: each stage's AppConfig application, environment and flags profile.

Processes read the profile with Powertools Feature Flags (``milequest.services.flags``). The
first document is the runtime's packaged ``flags.json``, rolled out with the stage's gradual
strategy; ``flags.schema.json`` (beside this module) validates every later one before
AppConfig deploys it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_appconfig as appconfig
from aws_cdk import aws_iam as iam
from aws_lambda_powertools.utilities.feature_flags.schema import SchemaValidator
from constructs import Construct
from milequest.services.flags import DEFAULT_DOCUMENT

from .config import EnvironmentConfig
from .paths import RUNTIME_PACKAGE_DIR

SCHEMA_FILE = Path(__file__).with_name("flags.schema.json")
DOCUMENT_FILE = RUNTIME_PACKAGE_DIR / DEFAULT_DOCUMENT
PROFILE_NAME = "flags"
# What Powertools' AppConfigStore calls: a session, then the latest document.
READ_ACTIONS = ("appconfig:StartConfigurationSession", "appconfig:GetLatestConfiguration")


def initial_document() -> dict[str, Any]:
    """The packaged flags document, checked as the runtime will load it."""
    document: dict[str, Any] = json.loads(DOCUMENT_FILE.read_text(encoding="utf-8"))
    SchemaValidator(document).validate()
    return document


class FlagsStack(Stack):
    """The flags of one environment: application, environment, profile and rollout."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.config = config
        initial_document()  # a broken document fails synth, not a deployment
        self.application = appconfig.Application(
            self,
            "Application",
            application_name=config.resource_prefix,
            description=f"Mile Quest {config.name}: provider migration flags",
        )
        self.appconfig_environment = appconfig.Environment(
            self,
            "Environment",
            application=self.application,
            environment_name=config.name,
            description=f"The {config.name} stage's processes",
        )
        rollout = config.flag_rollout
        self.strategy = appconfig.DeploymentStrategy(
            self,
            "Rollout",
            deployment_strategy_name=f"{config.resource_prefix}-flags",
            description="Flags reach the stage's processes in steps",
            rollout_strategy=appconfig.RolloutStrategy.linear(
                growth_factor=rollout.growth_factor,
                deployment_duration=Duration.minutes(rollout.duration_minutes),
                final_bake_time=Duration.minutes(rollout.final_bake_minutes),
            ),
        )
        self.profile = appconfig.HostedConfiguration(
            self,
            "Flags",
            application=self.application,
            name=PROFILE_NAME,
            description="Powertools Feature Flags: provider routing during migrations",
            type=appconfig.ConfigurationType.FREEFORM,
            content=appconfig.ConfigurationContent.from_file(
                str(DOCUMENT_FILE), "application/json"
            ),
            validators=[appconfig.JsonSchemaValidator.from_file(str(SCHEMA_FILE))],
            deployment_strategy=self.strategy,
            deploy_to=[self.appconfig_environment],
        )
        # For the application's own processes, which route mail and events by the flags.
        self.reader_policy = iam.ManagedPolicy(
            self,
            "ReaderPolicy",
            description=f"{config.resource_prefix}: read the migration flags",
            statements=[
                iam.PolicyStatement(actions=list(READ_ACTIONS), resources=[self.profile_arn])
            ],
        )
        for name, value, description in (
            (
                "FlagsReaderPolicyArn",
                self.reader_policy.managed_policy_arn,
                "Attach to an application role that reads the flags",
            ),
            ("FlagsApplicationId", self.application.application_id, "FEATURE_FLAGS_APPLICATION"),
            (
                "FlagsEnvironmentId",
                self.appconfig_environment.environment_id,
                "FEATURE_FLAGS_ENVIRONMENT",
            ),
            ("FlagsProfileId", self.profile.configuration_profile_id, "FEATURE_FLAGS_PROFILE"),
            ("FlagsStrategyId", self.strategy.deployment_strategy_id, "--deployment-strategy-id"),
        ):
            CfnOutput(self, name, value=value, description=description)

    @property
    def profile_arn(self) -> str:
        """The ARN the AppConfig data actions authorize: this profile in this environment."""
        return self.format_arn(
            service="appconfig",
            resource="application",
            resource_name=(
                f"{self.application.application_id}/environment/"
                f"{self.appconfig_environment.environment_id}/configuration/"
                f"{self.profile.configuration_profile_id}"
            ),
        )

    def runtime_environment(self) -> dict[str, str]:
        """Where the runtime finds its flags (``FEATURE_FLAGS_MAX_AGE`` keeps its default)."""
        return {
            "FEATURE_FLAGS_APPLICATION": self.application.application_id,
            "FEATURE_FLAGS_ENVIRONMENT": self.appconfig_environment.environment_id,
            "FEATURE_FLAGS_PROFILE": self.profile.configuration_profile_id,
        }

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        """Read this profile's deployed document, nothing else.

        Not ``Environment.grant_read_config``: it allows every profile of the environment
        (``configuration/*``).
        """
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=list(READ_ACTIONS), resource_arns=[self.profile_arn]
        )
