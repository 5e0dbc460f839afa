"""The whole app: stages, stack names, cdk-nag and the environment each stage targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack, Stage
from aws_cdk import aws_sns as sns

from infra.config import ENVIRONMENTS, EnvironmentConfig
from infra.nag import acknowledge, add_checks, unacknowledged_findings

from .conftest import REPO_ROOT, SYNTH_REGION, Synthesized, new_app, synth_variant

ENVS = ("dev", "staging", "prod")


def test_one_stage_per_environment_with_named_stacks(synthesized: Synthesized) -> None:
    assert sorted(synthesized.stages) == sorted(ENVS)
    for env in ENVS:
        stage = synthesized.stages[env]
        artifacts = stage.synth().stacks
        # `cdk deploy 'dev/*'` selects stacks by these hierarchical ids.
        assert all(a.hierarchical_id.startswith(f"{env}/") for a in artifacts)
        assert {a.stack_name for a in artifacts} >= {
            f"milequest-{env}-email",
            f"milequest-{env}-realtime",
            f"milequest-{env}-observability",
        }
        assert all(a.environment.region == SYNTH_REGION for a in artifacts)


def test_container_stack_only_where_enabled(synthesized: Synthesized) -> None:
    for env in ENVS:
        names = synthesized.stack_names(env)
        assert ("Container" in names) == ENVIRONMENTS[env].container.enabled
    assert ENVIRONMENTS["prod"].container.enabled
    assert not ENVIRONMENTS["dev"].container.enabled


def test_nag_passes_with_reasoned_narrow_acknowledgements(synthesized: Synthesized) -> None:
    report = synthesized.validation_report()
    (plugin,) = report["pluginReports"]
    assert plugin["pluginName"] == "AwsSolutions"
    assert plugin["conclusion"] == "success"
    assert plugin["violations"] == []
    suppressed = plugin["suppressedViolations"]
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
        for entry in synthesized.validation_report()["pluginReports"][0]["suppressedViolations"]
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


def _nag_conclusion(synthesized: Synthesized) -> tuple[str, list[object]]:
    (plugin,) = synthesized.validation_report()["pluginReports"]
    return plugin["conclusion"], plugin["violations"]


def test_pinned_account_and_region_synthesize_clean(synth_env: None, tmp_path: Path) -> None:
    """Acknowledged findings name literal ARNs when the account and region are pinned."""
    data = ENVIRONMENTS["prod"].model_dump() | {"account": "111122223333", "region": "us-west-2"}
    result = synth_variant(EnvironmentConfig.model_validate(data), tmp_path)
    assert _nag_conclusion(result) == ("success", [])
    artifacts = result.stages["prod"].synth().stacks
    assert {(a.environment.account, a.environment.region) for a in artifacts} == {
        ("111122223333", "us-west-2")
    }


def test_environment_agnostic_synth_without_region(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no CDK_DEFAULT_* at all, the serverless stacks still synthesize, nag-clean."""
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
    result = synth_variant(ENVIRONMENTS["dev"], tmp_path)
    assert _nag_conclusion(result) == ("success", [])
    artifacts = result.stages["dev"].synth().stacks
    assert {a.environment.region for a in artifacts} == {"unknown-region"}
