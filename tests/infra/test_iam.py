"""Least privilege across every template: no wildcard actions, scoped SES sending."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from milequest.services.email.templates import load_template_sources

from infra.config import ENVIRONMENTS
from infra.email import ACCOUNT_LEVEL_READS

from .conftest import Synthesized, resources

ENVS = ("dev", "staging", "prod")
IAM_TYPES = {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::Role"}
# Actions IAM cannot scope to a resource: the only ones allowed on "Resource": "*".
NO_RESOURCE_LEVEL = {
    *ACCOUNT_LEVEL_READS,
    "ses:PutSuppressedDestination",
    "ecr:GetAuthorizationToken",
}


def _statements(synthesized: Synthesized, env: str) -> list[tuple[str, dict[str, Any]]]:
    """(stack/logical id, statement) of every IAM policy, after checking that every stack
    expected to grant something does (so that no check below runs on nothing)."""
    found = list(_iter_statements(synthesized, env))
    app = "Container" if ENVIRONMENTS[env].container.enabled else "Web"
    assert {where.split("/")[0] for where, _ in found} == {"Flags", "Email", "Realtime", app}
    return found


def _iter_statements(synthesized: Synthesized, env: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for stack in synthesized.stack_names(env):
        template = synthesized.template_json(env, stack)
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] not in IAM_TYPES:
                continue
            props = resource["Properties"]
            documents = [props.get("PolicyDocument")] + [
                p["PolicyDocument"] for p in props.get("Policies", [])
            ]
            for document in filter(None, documents):
                for statement in document["Statement"]:
                    yield f"{stack}/{logical_id}", statement


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("env", ENVS)
def test_no_wildcard_actions(synthesized: Synthesized, env: str) -> None:
    for where, statement in _statements(synthesized, env):
        for action in _as_list(statement.get("Action", [])):
            assert action != "*", (where, statement)
            assert not action.endswith(":*"), (where, statement)


@pytest.mark.parametrize("env", ENVS)
def test_star_resource_only_for_actions_without_resource_level_support(
    synthesized: Synthesized, env: str
) -> None:
    on_star: set[str] = set()
    for where, statement in _statements(synthesized, env):
        if "*" in _as_list(statement.get("Resource", [])) and statement["Effect"] == "Allow":
            actions = set(_as_list(statement["Action"]))
            assert actions <= NO_RESOURCE_LEVEL, (where, actions)
            on_star |= actions
    # Exactly these: the SES provider's account-level reads, the event handler's suppression
    # list calls and, with the container, ECS pulling its image.
    container = {"ecr:GetAuthorizationToken"} if ENVIRONMENTS[env].container.enabled else set()
    assert on_star == (NO_RESOURCE_LEVEL - {"ecr:GetAuthorizationToken"}) | container


@pytest.mark.parametrize("env", ENVS)
def test_ses_send_scoped_to_identity_configuration_set_and_templates(
    synthesized: Synthesized, env: str
) -> None:
    config = ENVIRONMENTS[env]
    send = [s for s in _send_statements(synthesized, env) if s.get("Sid") == "Send"]
    assert len(send) == 1
    arns = [json.dumps(r) for r in _as_list(send[0]["Resource"])]
    assert "*" not in send[0]["Resource"]
    # The domain identity and, in the sandbox, each sender identity, by reference.
    template = synthesized.template_json(env, "Email")
    identities = {
        json.dumps(
            {
                "Fn::Join": [
                    "",
                    [f"arn:aws:ses:{config.region}:{config.account}:identity/", {"Ref": lid}],
                ]
            }
        )
        for lid in resources(template, "AWS::SES::EmailIdentity")
    }
    senders = len(config.sender_addresses) if config.ses_sandbox else 0
    assert len(identities) == 1 + senders
    assert {r for r in arns if ":identity/" in r} == identities
    assert sum(":configuration-set/" in r for r in arns) == 1
    # Literal ARNs of every template: the account and region are pinned.
    assert {r for r in arns if ":template/" in r} == {
        f'"arn:aws:ses:{config.region}:{config.account}:template/milequest-{env}-{name}"'
        for name in load_template_sources()
    }
    assert len(arns) == len(identities) + 1 + len(load_template_sources())
    assert all(not r.endswith('/*"') for r in arns)


def _send_statements(synthesized: Synthesized, env: str) -> list[dict[str, Any]]:
    return [
        s
        for _, s in _statements(synthesized, env)
        if {"ses:SendEmail", "ses:SendBulkEmail"} & set(_as_list(s["Action"]))
    ]


@pytest.mark.parametrize("env", ENVS)
def test_sandbox_sends_may_name_any_identity_as_recipient(
    synthesized: Synthesized, env: str
) -> None:
    """In the sandbox SES authorizes the send on each recipient's identity too."""
    sandbox = [s for s in _send_statements(synthesized, env) if s.get("Sid") == "SandboxRecipients"]
    others = [s for s in _send_statements(synthesized, env) if s.get("Sid") != "SandboxRecipients"]
    assert len(others) == 1
    if not ENVIRONMENTS[env].ses_sandbox:
        assert sandbox == []
        return
    (statement,) = sandbox
    assert set(statement["Action"]) == {"ses:SendEmail", "ses:SendBulkEmail"}
    assert statement["Resource"].endswith(":identity/*")
