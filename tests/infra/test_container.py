"""Container target: Fargate service behind an ALB, from the runtime's Dockerfile."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import Stack

from infra.config import ENVIRONMENTS
from infra.container import CONTAINER_PORT, HEALTH_PATH, docker_context_excludes
from infra.realtime import pusher_js_options

from .conftest import (
    CERTIFICATE_ARN,
    REPO_ROOT,
    RUNTIME_VARS,
    Synthesized,
    only,
    realtime_config_options,
    resources,
)


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


def test_task_runs_the_image_asset_with_runtime_configuration(
    synthesized: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    # GET /realtime/config sends pusher-js to the stage's ws. host, as PusherJsOptions does.
    answered = realtime_config_options(env, monkeypatch)
    assert answered is not None
    expected = pusher_js_options(ENVIRONMENTS["prod"])
    assert (answered["wsHost"], answered["wsPort"], answered["forceTLS"]) == (
        expected["wsHost"],
        443,
        True,
    )
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


def _listeners(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["Protocol"]: r["Properties"]
        for r in resources(template, "AWS::ElasticLoadBalancingV2::Listener").values()
    }


def _https_only(template: dict[str, Any]) -> dict[str, Any]:
    """The HTTPS listener, after checking that plain HTTP only redirects to it."""
    listeners = _listeners(template)
    assert set(listeners) == {"HTTP", "HTTPS"}
    assert listeners["HTTPS"]["Port"] == 443
    # SslPolicy.RECOMMENDED_TLS: TLS 1.3, with 1.2 as the floor.
    assert listeners["HTTPS"]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    (action,) = listeners["HTTP"]["DefaultActions"]
    assert action["Type"] == "redirect"
    assert action["RedirectConfig"]["Protocol"] == "HTTPS"
    lb = only(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attributes = {a["Key"]: a["Value"] for a in lb["LoadBalancerAttributes"]}
    assert attributes["routing.http.drop_invalid_header_fields.enabled"] == "true"
    return listeners["HTTPS"]


def test_https_with_a_certificate_validated_in_the_zone(synthesized: Synthesized) -> None:
    config = ENVIRONMENTS["prod"]
    assert config.custom_domain is not None
    assert config.hosted_zone is not None
    template = _prod(synthesized)
    https = _https_only(template)
    (certificate_id,) = resources(template, "AWS::CertificateManager::Certificate")
    certificate = template["Resources"][certificate_id]["Properties"]
    assert certificate["DomainName"] == config.custom_domain.api_host
    assert certificate["ValidationMethod"] == "DNS"
    assert https["Certificates"] == [{"CertificateArn": {"Ref": certificate_id}}]
    record = only(template, "AWS::Route53::RecordSet")
    assert record["Name"] == f"{config.custom_domain.api_host}."
    assert record["HostedZoneId"] == config.hosted_zone.zone_id
    outputs = {name: o["Value"] for name, o in template["Outputs"].items()}
    assert outputs["PusherHost"] == config.custom_domain.api_host
    assert outputs["PusherPort"] == "443"


def test_https_with_an_imported_certificate(certified: Synthesized) -> None:
    template = certified.template_json("staging", "Container")
    https = _https_only(template)
    assert https["Certificates"] == [{"CertificateArn": CERTIFICATE_ARN}]
    assert resources(template, "AWS::Route53::RecordSet") == {}
    record = template["Outputs"]["ApiDnsRecord"]["Value"]
    assert record["Fn::Join"][1][0] == "api.staging.milequest.app CNAME "


def test_custom_resource_providers_log_with_retention(synthesized: Synthesized) -> None:
    """The VPC's default-security-group custom resource runs a CDK provider function."""
    template = _prod(synthesized)
    (provider_id,) = [
        lid
        for lid, fn in resources(template, "AWS::Lambda::Function").items()
        if "CustomResourceProvider" in lid
    ]
    (group_id,) = [
        lid
        for lid, group in resources(template, "AWS::Logs::LogGroup").items()
        if json.dumps({"Ref": provider_id}) in json.dumps(group["Properties"].get("LogGroupName"))
    ]
    group = template["Resources"][group_id]
    assert group["Properties"]["RetentionInDays"] == ENVIRONMENTS["prod"].log_retention_days
    (custom,) = [r for r in template["Resources"].values() if r["Type"].startswith("Custom::")]
    assert group_id in custom["DependsOn"]


def test_dockerignore_keeps_only_what_the_image_needs() -> None:
    patterns = docker_context_excludes()
    assert patterns[0] == "*"
    assert "!uv.lock" in patterns
    assert "!runtime/src" in patterns
    assert (REPO_ROOT / "runtime" / "Dockerfile").is_file()
