"""Container target: the runtime's HTTP app on ECS Fargate behind an Application Load Balancer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Duration, IgnoreMode, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .config import EnvironmentConfig
from .domains import certificate, hosted_zone
from .email import EmailStack
from .flags import FlagsStack
from .lambdas import provider_log_groups
from .nag import acknowledge, acknowledge_validation
from .paths import DOCKERFILE, REPO_ROOT
from .realtime import RealtimeStack
from .web import http_app_environment, http_app_outputs

CONTAINER_PORT = 8080
# Liveness, not the deep /healthz report: a provider outage must not recycle every task.
HEALTH_PATH = "/livez"
DOCKERIGNORE = REPO_ROOT / "runtime" / "Dockerfile.dockerignore"


def docker_context_excludes(path: Path = DOCKERIGNORE) -> list[str]:
    """Build-context patterns of ``runtime/Dockerfile.dockerignore`` (context: the repo root).

    Docker reads an ignore file named after the Dockerfile beside it; CDK gets the same list.
    """
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class ContainerStack(Stack):
    """``uvicorn milequest.web:app`` as a Fargate service, built from ``runtime/Dockerfile``."""

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
        self.config = config
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        # EnvironmentConfig refuses a container target without a custom domain (HTTPS).
        assert config.custom_domain is not None
        self.host = config.custom_domain.api_host
        settings = config.container
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=len(config.availability_zones),
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                ec2.SubnetConfiguration(
                    name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                ),
            ],
        )
        acknowledge_validation(
            self.vpc,
            "CloudFormation-Validate::W3010",
            "The zones are named in infra/config.py: looking them up would need credentials at "
            "synth time, and zone names a and b exist in every account of the region.",
        )
        self.vpc.add_flow_log(
            "FlowLogs",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                logs.LogGroup(
                    self,
                    "FlowLogGroup",
                    retention=config.log_retention,
                    removal_policy=config.cdk_removal_policy,
                )
            ),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.image = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(REPO_ROOT),
            file=DOCKERFILE,
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=docker_context_excludes(),
            ignore_mode=IgnoreMode.DOCKER,
        )
        self.app_logs = logs.LogGroup(
            self,
            "AppLogs",
            retention=config.log_retention,
            removal_policy=config.cdk_removal_policy,
        )
        environment = http_app_environment(config, email, realtime) | flags.runtime_environment()
        self.service = ecs_patterns.ApplicationLoadBalancedFargateService(
            self,
            "Web",
            cluster=self.cluster,
            cpu=settings.cpu,
            memory_limit_mib=settings.memory_mib,
            desired_count=settings.desired_count,
            min_healthy_percent=100,
            public_load_balancer=True,
            **self._https(config),
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
            task_image_options=ecs_patterns.ApplicationLoadBalancedTaskImageOptions(
                image=ecs.ContainerImage.from_docker_image_asset(self.image),
                container_name="web",
                container_port=CONTAINER_PORT,
                environment=environment,
                log_driver=ecs.LogDrivers.aws_logs(stream_prefix="web", log_group=self.app_logs),
            ),
        )
        self.service.target_group.configure_health_check(
            path=HEALTH_PATH,
            healthy_http_codes="200",
            interval=Duration.seconds(15),
            healthy_threshold_count=2,
            unhealthy_threshold_count=3,
        )
        self.service.target_group.set_attribute("deregistration_delay.timeout_seconds", "30")
        # Requests with malformed headers are dropped, not passed to the app.
        self.service.load_balancer.set_attribute(
            "routing.http.drop_invalid_header_fields.enabled", "true"
        )
        self._access_logs(config)
        task_role = self.service.task_definition.task_role
        task_role.add_managed_policy(email.sender_policy)
        task_role.add_managed_policy(realtime.publisher_policy)
        email.suppression.grant_record(task_role)
        flags.grant_read(task_role)
        self._acknowledgements()
        self._dns(config)
        http_app_outputs(self, config, self.host)
        provider_log_groups(self, config)

    @property
    def availability_zones(self) -> list[str]:
        """The configured zones, instead of CDK's lookup (which needs credentials to synth)."""
        return list(self.config.availability_zones)

    def _https(self, config: EnvironmentConfig) -> dict[str, Any]:
        """HTTPS on ``custom_domain.api_host``; plain HTTP only redirects to it."""
        options: dict[str, Any] = {
            "certificate": certificate(self, "Certificate", config, self.host),
            "protocol": elbv2.ApplicationProtocol.HTTPS,
            "redirect_http": True,
            "ssl_policy": elbv2.SslPolicy.RECOMMENDED_TLS,
        }
        if config.hosted_zone is not None and config.hosted_zone.contains(self.host):
            # The pattern adds the alias record for the host.
            options |= {"domain_name": self.host, "domain_zone": hosted_zone(self, config)}
        return options

    def _dns(self, config: EnvironmentConfig) -> None:
        if config.hosted_zone is None or not config.hosted_zone.contains(self.host):
            dns_name = self.service.load_balancer.load_balancer_dns_name
            CfnOutput(
                self,
                "ApiDnsRecord",
                description=f"Publish this DNS record for {self.host}",
                value=f"{self.host} CNAME {dns_name}",
            )

    def _access_logs(self, config: EnvironmentConfig) -> None:
        bucket = s3.Bucket(
            self,
            "AccessLogs",
            # ALB log delivery supports SSE-S3 only, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(config.log_retention_days))],
            removal_policy=config.cdk_removal_policy,
            auto_delete_objects=config.cdk_removal_policy == RemovalPolicy.DESTROY,
        )
        acknowledge(
            bucket,
            "S1",
            "This bucket only receives the load balancer's access logs; logging access to "
            "the log bucket itself would need yet another bucket.",
        )
        self.service.load_balancer.log_access_logs(bucket, prefix="alb")

    def _acknowledgements(self) -> None:
        service = self.service
        acknowledge(
            service.load_balancer,
            "EC23",
            "The public load balancer serves the HTTP app to the internet; tasks accept "
            "traffic from the load balancer's security group only.",
        )
        acknowledge(
            service.task_definition,
            "ECS2",
            "Environment variables hold configuration only (names, ARNs, endpoints); the "
            "credentials stay in Secrets Manager and are read at run time by ARN.",
        )
        execution_role = service.task_definition.execution_role
        if execution_role is not None:
            acknowledge(
                execution_role,
                "IAM5",
                "ecr:GetAuthorizationToken has no resource-level permissions; ECS needs it to "
                "pull the image.",
                "Resource::*",
            )
