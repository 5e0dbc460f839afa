"""Container target: Fargate service behind an ALB, from the runtime's Dockerfile."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Stack

from infra.config import ENVIRONMENTS, EnvironmentConfig
from infra.container import CONTAINER_PORT, HEALTH_PATH, docker_context_excludes
from infra.stage import MileQuestStage

from .conftest import REPO_ROOT, RUNTIME_VARS, Synthesized, only, resources


def _prod(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.template_json("prod", "Container")


def test_fargate_service_behind_load_balancer(synthesized: Synthesized) -> None:
    template = _prod(synthesized)
    config = ENVIRONMENTS["prod"].container
    service = only(template, "AWS::ECS::Service")
    assert service["LaunchType"] == "FARGATE"
    assert service["DesiredCount"] == config.desired_count
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {
        "Enable": True,
        "Rollback": True,
    }
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    cluster = only(template, "AWS::ECS::Cluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]
    lb = only(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert lb["Scheme"] == "internet-facing"
    attributes = {a["Key"]: a["Value"] for a in lb["LoadBalancerAttributes"]}
    assert attributes["access_logs.s3.enabled"] == "true"
    target_group = only(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert target_group["HealthCheckPath"] == HEALTH_PATH
    assert service["LoadBalancers"][0]["ContainerPort"] == CONTAINER_PORT
    assert target_group["Matcher"] == {"HttpCode": "200"}


def test_task_runs_the_image_asset_with_runtime_configuration(synthesized: Synthesized) -> None:
    template = _prod(synthesized)
    task = only(template, "AWS::ECS::TaskDefinition")
    (container,) = task["ContainerDefinitions"]
    assert container["PortMappings"][0]["ContainerPort"] == CONTAINER_PORT
    assert "cdk-hnb659fds-container-assets" in json.dumps(container["Image"])
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    env = {item["Name"]: item["Value"] for item in container["Environment"]}
    for name in (
        "EMAIL_PROVIDER",
        "SES_CONFIGURATION_SET",
        "SES_TEMPLATE_PREFIX",
        "WEBSOCKET_PROVIDER",
        "CONNECTIONS_TABLE",
        "APIGW_MANAGEMENT_ENDPOINT",
        "WEBSOCKET_SECRET_ARN",
        "PUSHER_SECRET_ARN",
    ):
        assert name in env
    assert env["POWERTOOLS_SERVICE_NAME"] == "web"
    assert set(env) <= RUNTIME_VARS
    assert env["METRICS_SINK"] == "emf"
    # The task role gets exactly the two application policies.
    role_id = task["TaskRoleArn"]["Fn::GetAtt"][0]
    managed = template["Resources"][role_id]["Properties"]["ManagedPolicyArns"]
    exports = json.dumps(managed)
    assert "SenderPolicy" in exports
    assert "PublisherPolicy" in exports


def test_image_asset_built_from_runtime_dockerfile(synthesized: Synthesized) -> None:
    stage = synthesized.stages["prod"]
    stack = stage.node.find_child("Container")
    assert isinstance(stack, Stack)
    assembly_dir = synthesized.outdir / "assembly-prod"
    manifest = json.loads((assembly_dir / f"{stack.artifact_id}.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "runtime/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    context = assembly_dir / image["source"]["directory"]
    staged = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert "uv.lock" in staged
    assert "runtime/Dockerfile" in staged
    assert "runtime/src/milequest/__init__.py" in staged
    assert not any(p.startswith((".venv", "node_modules", "tests", "infra")) for p in staged)


def test_no_container_stack_where_disabled(synthesized: Synthesized) -> None:
    for env in ("dev", "staging"):
        assert "Container" not in synthesized.stack_names(env)
        for stack in synthesized.stack_names(env):
            template = synthesized.template_json(env, stack)
            assert not resources(template, "AWS::ECS::Service")


def test_https_with_certificate_when_a_zone_is_configured(zoned: Synthesized) -> None:
    template = zoned.template_json("staging", "Container")
    certificate = only(template, "AWS::CertificateManager::Certificate")
    assert certificate["DomainName"] == "api.staging.milequest.app"
    assert certificate["ValidationMethod"] == "DNS"
    listeners = {
        r["Properties"]["Protocol"]: r["Properties"]
        for r in resources(template, "AWS::ElasticLoadBalancingV2::Listener").values()
    }
    assert listeners["HTTPS"]["Port"] == 443
    assert listeners["HTTP"]["DefaultActions"][0]["Type"] == "redirect"


def test_container_target_requires_a_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)
    config = EnvironmentConfig.model_validate(ENVIRONMENTS["prod"].model_dump())
    with pytest.raises(ValueError, match="needs a region"):
        MileQuestStage(App(context={"aws:cdk:bundling-stacks": []}), config)


def test_dockerignore_keeps_only_what_the_image_needs() -> None:
    patterns = docker_context_excludes()
    assert patterns[0] == "*"
    assert "!uv.lock" in patterns
    assert "!runtime/src" in patterns
    assert (REPO_ROOT / "runtime" / "Dockerfile").is_file()
