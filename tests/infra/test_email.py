"""Email stack: SES identity and DKIM, configuration set, event pipeline, templates."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match
from milequest.services.email.suppression_dynamodb import (
    table_definition as suppression_table_definition,
)
from milequest.services.email.templates import load_template_sources

from infra.config import ENVIRONMENTS
from infra.suppression import LOOKUP_ACTIONS, RECORD_ACTIONS

from .conftest import Synthesized, only, resources

ENVS = ("dev", "staging", "prod")
# CloudFormation spells the event types in camelCase.
EVENT_TYPES = {"bounce", "complaint", "delivery", "reject", "deliveryDelay", "renderingFailure"}


def _email(synthesized: Synthesized, env: str) -> dict[str, Any]:
    return synthesized.template_json(env, "Email")


@pytest.mark.parametrize("env", ENVS)
def test_domain_identity_with_easy_dkim_and_mail_from(synthesized: Synthesized, env: str) -> None:
    config = ENVIRONMENTS[env]
    synthesized.template(env, "Email").has_resource_properties(
        "AWS::SES::EmailIdentity",
        {
            "EmailIdentity": config.domain,
            "DkimAttributes": {"SigningEnabled": True},
            "MailFromAttributes": {"MailFromDomain": f"mail.{config.domain}"},
            "ConfigurationSetAttributes": {"ConfigurationSetName": Match.any_value()},
        },
    )


def test_without_a_zone_the_records_are_outputs(bare: Synthesized) -> None:
    config = bare.stages["dev"].config
    outputs = _email(bare, "dev")["Outputs"]
    # Without a hosted zone the records to publish are stack outputs.
    for name in ("DkimRecord1", "DkimRecord2", "DkimRecord3"):
        joined = outputs[name]["Value"]["Fn::Join"][1]
        assert " CNAME " in joined
        attrs = {part["Fn::GetAtt"][1] for part in joined if isinstance(part, dict)}
        index = name[-1]
        assert attrs == {f"DkimDNSTokenName{index}", f"DkimDNSTokenValue{index}"}
    assert outputs["MailFromMxRecord"]["Value"] == (
        f"mail.{config.domain} MX 10 feedback-smtp.eu-west-1.amazonses.com"
    )
    assert "include:amazonses.com" in outputs["MailFromSpfRecord"]["Value"]
    assert resources(_email(bare, "dev"), "AWS::Route53::RecordSet") == {}


def test_sender_identities_only_in_sandbox(synthesized: Synthesized) -> None:
    for env in ENVS:
        config = ENVIRONMENTS[env]
        identities = {
            r["Properties"]["EmailIdentity"]
            for r in resources(_email(synthesized, env), "AWS::SES::EmailIdentity").values()
        }
        expected = {config.domain} | (set(config.sender_addresses) if config.ses_sandbox else set())
        assert identities == expected
    assert ENVIRONMENTS["dev"].ses_sandbox
    assert ENVIRONMENTS["dev"].sender_addresses


@pytest.mark.parametrize("env", ENVS)
def test_hosted_zone_gets_dkim_mail_from_and_dmarc_records(
    synthesized: Synthesized, env: str
) -> None:
    config = ENVIRONMENTS[env]
    assert config.hosted_zone is not None
    template = synthesized.template_json(env, "Email")
    identities = {
        lid: r["Properties"]["EmailIdentity"]
        for lid, r in resources(template, "AWS::SES::EmailIdentity").items()
    }
    (identity_id,) = [lid for lid, name in identities.items() if name == config.domain]
    records = [r["Properties"] for r in resources(template, "AWS::Route53::RecordSet").values()]
    assert all(r["HostedZoneId"] == config.hosted_zone.zone_id for r in records)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_type.setdefault(record["Type"], []).append(record)
    assert {json.dumps(r["Name"]) for r in by_type["CNAME"]} == {
        json.dumps({"Fn::GetAtt": [identity_id, f"DkimDNSTokenName{i}"]}) for i in (1, 2, 3)
    }
    (mx,) = by_type["MX"]
    assert mx["Name"] == config.mail_from_domain
    assert mx["ResourceRecords"] == [f"10 feedback-smtp.{config.region}.amazonses.com"]
    txt = {r["Name"]: r["ResourceRecords"] for r in by_type["TXT"]}
    assert txt[config.mail_from_domain] == ['"v=spf1 include:amazonses.com ~all"']
    assert txt[f"_dmarc.{config.domain}"][0].startswith('"v=DMARC1; p=quarantine;')
    assert len(txt) == 2
    assert "DkimRecord1" not in template.get("Outputs", {})


@pytest.mark.parametrize("env", ENVS)
def test_configuration_set_and_event_destinations(synthesized: Synthesized, env: str) -> None:
    template = _email(synthesized, env)
    config_set = only(template, "AWS::SES::ConfigurationSet")
    assert config_set["Name"] == f"milequest-{env}"
    assert config_set["ReputationOptions"] == {"ReputationMetricsEnabled": True}
    assert config_set["SuppressionOptions"] == {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]}
    assert config_set["DeliveryOptions"]["TlsPolicy"] == "REQUIRE"

    topics = resources(template, "AWS::SNS::Topic")
    destinations = resources(template, "AWS::SES::ConfigurationSetEventDestination")
    published: dict[str, str] = {}
    for destination in destinations.values():
        spec = destination["Properties"]["EventDestination"]
        assert spec["Enabled"] is True
        (event,) = spec["MatchingEventTypes"]
        topic_ref = spec["SnsDestination"]["TopicARN"]["Ref"]
        assert topic_ref in topics
        published[event] = topic_ref
    assert set(published) == EVENT_TYPES
    assert len(set(published.values())) == len(EVENT_TYPES)


@pytest.mark.parametrize("env", ENVS)
def test_topics_use_a_customer_key_that_ses_may_use(synthesized: Synthesized, env: str) -> None:
    template = _email(synthesized, env)
    (key_id,) = resources(template, "AWS::KMS::Key")
    key = template["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    statements = key["KeyPolicy"]["Statement"]
    ses = [s for s in statements if s.get("Principal") == {"Service": "ses.amazonaws.com"}]
    assert len(ses) == 1
    assert set(ses[0]["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}
    assert ses[0]["Effect"] == "Allow"
    assert "aws:SourceAccount" in ses[0]["Condition"]["StringEquals"]
    for topic in resources(template, "AWS::SNS::Topic").values():
        assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}


@pytest.mark.parametrize("env", ENVS)
def test_topics_enforce_ssl_and_allow_only_this_configuration_set(
    synthesized: Synthesized, env: str
) -> None:
    template = _email(synthesized, env)
    topics = set(resources(template, "AWS::SNS::Topic"))
    assert len(topics) == len(EVENT_TYPES)
    covered = set()
    for policy in resources(template, "AWS::SNS::TopicPolicy").values():
        props = policy["Properties"]
        statements = props["PolicyDocument"]["Statement"]
        deny = [s for s in statements if s["Effect"] == "Deny"]
        assert deny
        assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        allow = [s for s in statements if s["Effect"] == "Allow"]
        assert allow[0]["Principal"] == {"Service": "ses.amazonaws.com"}
        assert "configuration-set/" in str(allow[0]["Condition"]["StringEquals"])
        covered |= {ref["Ref"] for ref in props["Topics"]}
    assert covered == topics


@pytest.mark.parametrize("env", ENVS)
def test_event_handler_subscribed_with_dead_letter_queue(
    synthesized: Synthesized, env: str
) -> None:
    template = _email(synthesized, env)
    (queue_id,) = resources(template, "AWS::SQS::Queue")
    queue = template["Resources"][queue_id]["Properties"]
    assert "KmsMasterKeyId" in queue
    # Undelivered events are kept where the environment keeps its data (prod).
    retain = ENVIRONMENTS[env].removal_policy == "retain"
    assert template["Resources"][queue_id]["DeletionPolicy"] == ("Retain" if retain else "Delete")
    queue_policy = only(template, "AWS::SQS::QueuePolicy")["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in queue_policy
    )
    functions = resources(template, "AWS::Lambda::Function")
    (fn_id,) = functions
    fn = functions[fn_id]["Properties"]
    assert fn["Handler"] == "milequest.handlers.ses_events.handler"
    assert fn["DeadLetterConfig"]["TargetArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    # The queue is KMS-encrypted: sending to it needs the key as well as sqs:SendMessage.
    role_id = fn["Role"]["Fn::GetAtt"][0]
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
    ]
    granted = {
        (action, json.dumps(s["Resource"]))
        for s in policy
        for action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    key_arn = json.dumps(queue["KmsMasterKeyId"])
    assert ("sqs:SendMessage", json.dumps({"Fn::GetAtt": [queue_id, "Arn"]})) in granted
    assert ("kms:GenerateDataKey", key_arn) in granted
    assert ("kms:Decrypt", key_arn) in granted
    subs = resources(template, "AWS::SNS::Subscription")
    assert len(subs) == len(EVENT_TYPES)
    (alias_id,) = resources(template, "AWS::Lambda::Alias")
    for sub in subs.values():
        props = sub["Properties"]
        assert props["Protocol"] == "lambda"
        # The alias (SnapStart serves published versions only), which SNS may invoke.
        assert props["Endpoint"] == {"Ref": alias_id}
        assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [queue_id, "Arn"]}}


@pytest.mark.parametrize("env", ENVS)
def test_templates_are_the_runtime_files(synthesized: Synthesized, env: str) -> None:
    prefix = f"milequest-{env}-"
    deployed = {
        r["Properties"]["Template"]["TemplateName"]: r["Properties"]["Template"]
        for r in resources(_email(synthesized, env), "AWS::SES::Template").values()
    }
    sources = load_template_sources()
    assert "welcome" in sources
    assert set(deployed) == {prefix + name for name in sources}
    for name, source in sources.items():
        assert deployed[prefix + name]["SubjectPart"] == source.subject
        assert deployed[prefix + name]["HtmlPart"] == source.html
        assert deployed[prefix + name]["TextPart"] == source.text
    # The runtime sends with the same prefix.
    (handler,) = resources(_email(synthesized, env), "AWS::Lambda::Function").values()
    assert handler["Properties"]["Environment"]["Variables"]["SES_TEMPLATE_PREFIX"] == prefix


def test_template_names_do_not_collide_across_environments(synthesized: Synthesized) -> None:
    """SES template names are unique per account and region, which environments may share."""
    names = [
        r["Properties"]["Template"]["TemplateName"]
        for env in ENVS
        for r in resources(_email(synthesized, env), "AWS::SES::Template").values()
    ]
    assert len(names) == len(set(names)) == len(ENVS) * len(load_template_sources())
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name in names)


@pytest.mark.parametrize("env", ENVS)
def test_outputs_for_operators(synthesized: Synthesized, env: str) -> None:
    template = _email(synthesized, env)
    outputs = template["Outputs"]
    (policy_id,) = resources(template, "AWS::IAM::ManagedPolicy")
    assert outputs["SenderPolicyArn"]["Value"] == {"Ref": policy_id}
    (config_set_id,) = resources(template, "AWS::SES::ConfigurationSet")
    assert outputs["ConfigurationSetName"]["Value"] == {"Ref": config_set_id}
    assert "EventsDeadLetterQueueUrl" in outputs


@pytest.mark.parametrize("env", ENVS)
def test_the_shared_suppression_list(synthesized: Synthesized, env: str) -> None:
    """One table per stage, from the runtime's definition; the event handler and the HTTP app
    add to it, applications sending mail only look addresses up."""
    template = _email(synthesized, env)
    (table_id, table), *others = resources(template, "AWS::DynamoDB::Table").items()
    assert others == []
    assert table["Properties"]["KeySchema"] == suppression_table_definition()["KeySchema"]
    retain = ENVIRONMENTS[env].removal_policy == "retain"
    assert table["DeletionPolicy"] == ("Retain" if retain else "Delete")
    table_arn = {"Fn::GetAtt": [table_id, "Arn"]}
    (handler,) = resources(template, "AWS::Lambda::Function").values()
    assert handler["Properties"]["Environment"]["Variables"]["EMAIL_SUPPRESSION_TABLE"] == {
        "Ref": table_id
    }
    granted: dict[str, set[str]] = {}
    for lid, policy in (
        resources(template, "AWS::IAM::Policy") | resources(template, "AWS::IAM::ManagedPolicy")
    ).items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Resource"] == table_arn:
                actions = statement["Action"]
                granted.setdefault(lid, set()).update(
                    actions if isinstance(actions, list) else [actions]
                )
    (sender,) = resources(template, "AWS::IAM::ManagedPolicy")
    assert granted.pop(sender) == set(LOOKUP_ACTIONS)
    assert list(granted.values()) == [set(RECORD_ACTIONS)]
    # The HTTP app (webhooks, unsubscribes) records too, on its own stack's role.
    app = "Web" if "Web" in synthesized.stack_names(env) else "Container"
    app_template = synthesized.template_json(env, app)
    record = [
        statement
        for policy in resources(app_template, "AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "Fn::ImportValue" in json.dumps(statement["Resource"])
        and "dynamodb:PutItem" in json.dumps(statement["Action"])
    ]
    assert len(record) == 1
    assert set(record[0]["Action"]) == set(RECORD_ACTIONS)
