"""The whole app: stages, stack names, cdk-nag and the environment each stage targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack, Stage
from aws_cdk import aws_sns as sns

from infra.config import ENVIRONMENTS
from infra.nag import acknowledge, add_checks, unacknowledged_findings

from .conftest import CLI_REGION, REPO_ROOT, Synthesized, new_app, resources

ENVS = ("dev", "staging", "prod")


def test_one_stage_per_environment_with_named_stacks(synthesized: Synthesized) -> None:
    assert sorted(synthesized.stages) == sorted(ENVS)
    for env in ENVS:
        stage = synthesized.stages[env]
        artifacts = stage.synth().stacks
        # `cdk deploy 'dev/*'` selects stacks by these hierarchical ids.
        assert all(a.hierarchical_id.startswith(f"{env}/") for a in artifacts)
        assert {a.stack_name for a in artifacts} >= {
            f"milequest-{env}-flags",
            f"milequest-{env}-email",
            f"milequest-{env}-realtime",
            f"milequest-{env}-observability",
        }
        # Every process reads the flags: their stacks deploy after the Flags stack.
        for consumer in (stage.email, stage.realtime, stage.web or stage.container):
            assert consumer is not None
            assert stage.flags in consumer.dependencies
        # Placement comes from the config, never from the caller's credentials.
        config = ENVIRONMENTS[env]
        assert config.region != CLI_REGION
        assert {(a.environment.account, a.environment.region) for a in artifacts} == {
            (config.account, config.region)
        }


def test_synth_needs_no_lookups(synthesized: Synthesized) -> None:
    """No context is missing: synth runs offline, without credentials (make synth)."""
    for env in ENVS:
        manifest = json.loads(
            (synthesized.outdir / f"assembly-{env}" / "manifest.json").read_text()
        )
        assert manifest.get("missing", []) == []
        app = "Container" if ENVIRONMENTS[env].container.enabled else "Web"
        assert set(synthesized.stack_names(env)) == {
            "Flags",
            "Email",
            "Realtime",
            app,
            "Observability",
        }
        for stack in synthesized.stack_names(env):
            assert "dummy" not in json.dumps(synthesized.template_json(env, stack))


def test_the_http_app_runs_on_the_container_or_on_lambda(synthesized: Synthesized) -> None:
    for env in ENVS:
        names = synthesized.stack_names(env)
        container = ENVIRONMENTS[env].container.enabled
        assert ("Container" in names) == container
        assert ("Web" in names) == (not container)
    assert ENVIRONMENTS["prod"].container.enabled
    assert not ENVIRONMENTS["dev"].container.enabled


def test_cross_stack_references_are_strong(synthesized: Synthesized) -> None:
    """Exports and imports: CloudFormation refuses to change a value a consumer still uses,
    where a weak reference (Fn::GetStackOutput) would leave the consumer on the old value."""
    imports = 0
    for env in ENVS:
        for stack in synthesized.stack_names(env):
            text = json.dumps(synthesized.template_json(env, stack))
            assert "Fn::GetStackOutput" not in text
            imports += text.count("Fn::ImportValue")
    assert imports > 0
    cdk_json = json.loads((REPO_ROOT / "cdk.json").read_text())
    assert cdk_json["context"]["@aws-cdk/core:defaultCrossStackReferences"] == "strong"


def test_nag_passes_with_reasoned_narrow_acknowledgements(synthesized: Synthesized) -> None:
    plugins = {p["pluginName"]: p for p in synthesized.validation_report()["pluginReports"]}
    # cdk-nag, and CDK's own template validation (cfn-lint rules).
    assert set(plugins) == {"AwsSolutions", "CloudFormation Validate"}
    for plugin in plugins.values():
        assert plugin["conclusion"] == "success"
        assert plugin["violations"] == []
    # Named zones (no lookup at synth) and SNS subscriptions to aliases: see the reasons.
    cfn_rules = {v["ruleName"] for v in plugins["CloudFormation Validate"]["suppressedViolations"]}
    assert cfn_rules == {"W3010", "W3694"}
    suppressed = [entry for plugin in plugins.values() for entry in plugin["suppressedViolations"]]
    assert suppressed, "expected the documented acknowledgements to be exercised"
    stack_paths = {f"{env}/{name}" for env in ENVS for name in synthesized.stack_names(env)} | set(
        ENVS
    )
    for entry in suppressed:
        assert len(entry["reason"]) >= 40, entry
        # Never acknowledged stack-wide (or stage-wide): always on a construct inside.
        assert entry["acknowledgedAt"] not in stack_paths, entry
        for construct in entry["violatingConstructs"]:
            assert construct["constructPath"].startswith(entry["acknowledgedAt"] + "/")


def test_wildcard_resource_acknowledgements_are_for_known_actions(
    synthesized: Synthesized,
) -> None:
    rules = {
        entry["ruleName"]
        for plugin in synthesized.validation_report()["pluginReports"]
        if plugin["pluginName"] == "AwsSolutions"
        for entry in plugin["suppressedViolations"]
    }
    iam5 = sorted(rule for rule in rules if rule.startswith("AwsSolutions-IAM5"))
    assert "AwsSolutions-IAM5[Resource::*]" in iam5
    assert not any("Action::" in rule for rule in iam5)


def test_a_finding_fails_synth(tmp_path: Path) -> None:
    """The checks are wired as a validation plugin: an unacknowledged finding fails synth."""
    app = new_app(tmp_path)
    sns.Topic(Stack(Stage(app, "dev"), "Probe"), "Plain")
    add_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed") as failure:
        app.synth()
    assert "AwsSolutions-SNS3" in str(failure.value)


def test_acknowledgements_need_a_reason_and_a_construct() -> None:
    stack = Stack(Stage(App(), "dev"), "Probe")
    topic = sns.Topic(stack, "Topic")
    with pytest.raises(ValueError, match="reason"):
        acknowledge(topic, "SNS3", "because")
    with pytest.raises(ValueError, match="never stack-wide"):
        acknowledge(stack, "SNS3", "a long enough reason that is still refused")


def test_unacknowledged_findings_read_from_the_report(tmp_path: Path) -> None:
    assert unacknowledged_findings(tmp_path) == []
    report = {
        "pluginReports": [
            {
                "violations": [
                    {
                        "ruleName": "AwsSolutions-SNS3",
                        "violatingConstructs": [{"constructPath": "dev/Probe/Plain/Resource"}],
                    }
                ]
            }
        ]
    }
    (tmp_path / "validation-report.json").write_text(json.dumps(report))
    assert unacknowledged_findings(tmp_path) == ["AwsSolutions-SNS3 at dev/Probe/Plain/Resource"]


def test_cdk_json_runs_the_app_with_recommended_flags() -> None:
    cdk_json = json.loads((REPO_ROOT / "cdk.json").read_text())
    assert cdk_json["app"].endswith("python app.py")
    context = cdk_json["context"]
    for flag in (
        "@aws-cdk/aws-iam:minimizePolicies",
        "@aws-cdk/aws-lambda:recognizeLayerVersion",
        "@aws-cdk/core:enablePartitionLiterals",
    ):
        assert context[flag] is True


def test_every_lambda_function_logs_with_a_retention(synthesized: Synthesized) -> None:
    """Functions we define name their log group; CDK's custom resource providers get one
    named after them (Lambda would otherwise create it without a retention)."""
    for env in ENVS:
        retention = ENVIRONMENTS[env].log_retention_days
        checked = 0
        for stack in synthesized.stack_names(env):
            template = synthesized.template_json(env, stack)
            groups = resources(template, "AWS::Logs::LogGroup")
            named = {
                json.dumps(g["Properties"]["LogGroupName"]): g
                for g in groups.values()
                if "LogGroupName" in g["Properties"]
            }
            for lid, fn in resources(template, "AWS::Lambda::Function").items():
                config = fn["Properties"].get("LoggingConfig", {})
                if "LogGroup" in config:
                    group = groups[config["LogGroup"]["Ref"]]
                else:
                    name = {"Fn::Join": ["", ["/aws/lambda/", {"Ref": lid}]]}
                    group = named[json.dumps(name)]
                assert group["Properties"]["RetentionInDays"] == retention, (env, stack, lid)
                checked += 1
        # The six handlers, the secret filler, and the HTTP app's function or, with the
        # container, the provider of the VPC's default-security-group custom resource.
        assert checked == 8, env
