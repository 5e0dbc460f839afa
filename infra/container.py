"""Container target: the runtime's HTTP app on ECS Fargate behind an Application Load Balancer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Duration, IgnoreMode, RemovalPolicy, Stack, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .config import EnvironmentConfig
from .email import EmailStack
from .lambdas import process_environment
from .nag import acknowledge
from .paths import DOCKERFILE, REPO_ROOT
from .realtime import RealtimeStack

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
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        if Token.is_unresolved(self.region):
            # ALB access logging needs the region's log-delivery principal at synth time.
            raise ValueError(
                f"{config.name}: the container target needs a region; set `region` in "
                "infra/config.py or CDK_DEFAULT_REGION (the CDK CLI sets it)"
            )
        settings = config.container
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=settings.max_azs,
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
        environment = {
            **process_environment(config, "web"),
            **email.runtime_environment(),
            **realtime.runtime_environment(),
        }
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
        self._access_logs(config)
        task_role = self.service.task_definition.task_role
        task_role.add_managed_policy(email.sender_policy)
        task_role.add_managed_policy(realtime.publisher_policy)
        self._acknowledgements()

    def _https(self, config: EnvironmentConfig) -> dict[str, Any]:
        """HTTPS on ``<subdomain>.<domain>`` with a DNS-validated certificate, given a zone."""
        if config.hosted_zone is None:
            return {}
        zone = route53.PublicHostedZone.from_hosted_zone_attributes(
            self,
            "Zone",
            hosted_zone_id=config.hosted_zone.zone_id,
            zone_name=config.hosted_zone.zone_name,
        )
        return {
            "domain_name": f"{config.container.subdomain}.{config.domain}",
            "domain_zone": zone,
            "protocol": elbv2.ApplicationProtocol.HTTPS,
            "redirect_http": True,
            "ssl_policy": elbv2.SslPolicy.RECOMMENDED_TLS,
        }

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
