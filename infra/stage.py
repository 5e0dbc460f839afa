"""One environment as a CDK Stage, and the app made of one Stage per environment."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import App, Stage, Tags
from constructs import Construct

from .config import EnvironmentConfig, check_environments, environment_configs
from .container import ContainerStack
from .email import EmailStack
from .flags import FlagsStack
from .nag import add_checks
from .observability import ObservabilityStack
from .realtime import RealtimeStack
from .web import WebStack


class MileQuestStage(Stage):
    """The stacks of one environment; ``cdk deploy '<name>/*'`` deploys exactly these.

    The HTTP app runs on the container target where the environment has one, otherwise on
    Lambda behind an HTTP API (``web``); exactly one of ``container`` and ``web`` is set.
    """

    def __init__(self, scope: Construct, config: EnvironmentConfig) -> None:
        super().__init__(scope, config.name, env=config.cdk_environment)
        self.config = config
        prefix = config.resource_prefix
        self.flags = FlagsStack(
            self,
            "Flags",
            config=config,
            stack_name=f"{prefix}-flags",
            description=f"Mile Quest {config.name}: migration flags (AppConfig)",
        )
        self.email = EmailStack(
            self,
            "Email",
            config=config,
            flags=self.flags,
            stack_name=f"{prefix}-email",
            description=f"Mile Quest {config.name}: SES identity, events and templates",
        )
        self.realtime = RealtimeStack(
            self,
            "Realtime",
            config=config,
            flags=self.flags,
            stack_name=f"{prefix}-realtime",
            description=f"Mile Quest {config.name}: WebSocket API, connections and secrets",
        )
        self.container: ContainerStack | None = None
        self.web: WebStack | None = None
        if config.container.enabled:
            self.container = ContainerStack(
                self,
                "Container",
                config=config,
                email=self.email,
                realtime=self.realtime,
                flags=self.flags,
                stack_name=f"{prefix}-container",
                description=f"Mile Quest {config.name}: the HTTP app on ECS Fargate",
            )
        else:
            self.web = WebStack(
                self,
                "Web",
                config=config,
                email=self.email,
                realtime=self.realtime,
                flags=self.flags,
                stack_name=f"{prefix}-web",
                description=f"Mile Quest {config.name}: the HTTP app on Lambda (HTTP API)",
            )
        self.observability = ObservabilityStack(
            self,
            "Observability",
            config=config,
            email=self.email,
            realtime=self.realtime,
            container=self.container,
            web=self.web,
            stack_name=f"{prefix}-observability",
            description=f"Mile Quest {config.name}: dashboard and alarms",
        )
        Tags.of(self).add("project", "milequest")
        Tags.of(self).add("environment", config.name)


def build_app(app: App, configs: Iterable[EnvironmentConfig] | None = None) -> list[MileQuestStage]:
    """Add one Stage per environment to ``app`` and register the cdk-nag checks."""
    configs = list(configs or environment_configs())
    check_environments(configs)
    stages = [MileQuestStage(app, config) for config in configs]
    add_checks(app)
    return stages
