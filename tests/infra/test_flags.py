"""Migration flags: the AppConfig resources of each stage, the schema validator, the settings
and the read grant of every process."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from aws_cdk import App
from aws_lambda_powertools.utilities.feature_flags.exceptions import SchemaValidationError
from aws_lambda_powertools.utilities.feature_flags.schema import SchemaValidator
from hypothesis import given, settings
from hypothesis import strategies as st
from milequest.services.flags import DEFAULT_DOCUMENT, default_document

from infra import flags
from infra.config import ENVIRONMENTS

from .conftest import Synthesized, only, resources

ENVS = ("dev", "staging", "prod")
SCHEMA = json.loads(flags.SCHEMA_FILE.read_text(encoding="utf-8"))
READ_ACTIONS = {"appconfig:StartConfigurationSession", "appconfig:GetLatestConfiguration"}
FLAG_VARIABLES = {
    "FEATURE_FLAGS_APPLICATION": "Application",
    "FEATURE_FLAGS_ENVIRONMENT": "Environment",
    "FEATURE_FLAGS_PROFILE": "ConfigurationProfile",
}
# The 10 % step of docs/migrating-from-pusher.md and an email split with failover.
ROLLOUT = {
    "websocket_provider": {
        "boolean_type": False,
        "default": "",
        "rules": {
            "10 % to API Gateway": {
                "when_match": "apigateway",
                "conditions": [
                    {
                        "action": "MODULO_RANGE",
                        "key": "bucket",
                        "value": {"BASE": 100, "START": 0, "END": 9},
                    }
                ],
            }
        },
    },
    "websocket_dual_publish": {"default": True},
    "email_failover_provider": {"boolean_type": False, "default": "ses"},
    "quiet_hours": {
        "default": False,
        "rules": {
            "nights": {
                "when_match": True,
                "conditions": [
                    {
                        "action": "SCHEDULE_BETWEEN_TIME_RANGE",
                        "key": "CURRENT_TIME",
                        "value": {"START": "22:00", "END": "06:30", "TIMEZONE": "Europe/London"},
                    }
                ],
            }
        },
    },
}


def _schema_accepts(document: Any) -> bool:
    return bool(jsonschema.Draft4Validator(SCHEMA).is_valid(document))


def _powertools_accepts(document: Any) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty documents and empty rules: valid, with a warning
        try:
            SchemaValidator(document).validate()
        except SchemaValidationError:
            return False
    return True


# The AppConfig resources --------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_application_environment_profile_and_gradual_rollout(
    synthesized: Synthesized, env: str
) -> None:
    config = ENVIRONMENTS[env]
    template = synthesized.template_json(env, "Flags")
    (app_id,) = resources(template, "AWS::AppConfig::Application")
    assert template["Resources"][app_id]["Properties"]["Name"] == f"milequest-{env}"
    environment = only(template, "AWS::AppConfig::Environment")
    assert environment["Name"] == env
    assert environment["ApplicationId"] == {"Ref": app_id}
    (profile_id, profile), *others = resources(
        template, "AWS::AppConfig::ConfigurationProfile"
    ).items()
    assert others == []
    properties = profile["Properties"]
    assert properties["Name"] == "flags"
    assert properties["ApplicationId"] == {"Ref": app_id}
    # Freeform JSON read by Powertools' AppConfigStore, hosted by AppConfig.
    assert (properties["Type"], properties["LocationUri"]) == ("AWS.Freeform", "hosted")
    # The schema beside the construct validates every document before it is deployed.
    (validator,) = properties["Validators"]
    assert validator["Type"] == "JSON_SCHEMA"
    assert json.loads(validator["Content"]) == SCHEMA
    assert len(validator["Content"]) <= 32768  # AppConfig's limit
    # The first document is the runtime's packaged flags.json, deployed with the strategy.
    (version_id, version), *others = resources(
        template, "AWS::AppConfig::HostedConfigurationVersion"
    ).items()
    assert others == []
    assert version["Properties"]["ContentType"] == "application/json"
    assert json.loads(version["Properties"]["Content"]) == default_document()
    assert version["Properties"]["ConfigurationProfileId"] == {"Ref": profile_id}
    deployment = only(template, "AWS::AppConfig::Deployment")
    (strategy_id,) = resources(template, "AWS::AppConfig::DeploymentStrategy")
    assert deployment["ConfigurationVersion"] == {"Ref": version_id}
    assert deployment["ConfigurationProfileId"] == {"Ref": profile_id}
    assert deployment["DeploymentStrategyId"] == {"Ref": strategy_id}
    assert deployment["EnvironmentId"] == {
        "Ref": next(iter(resources(template, "AWS::AppConfig::Environment")))
    }
    strategy = template["Resources"][strategy_id]["Properties"]
    rollout = config.flag_rollout
    # Gradual: several linear steps over a duration, then a bake time.
    assert strategy["GrowthType"] == "LINEAR"
    assert strategy["GrowthFactor"] == rollout.growth_factor < 100
    assert strategy["DeploymentDurationInMinutes"] == rollout.duration_minutes >= 1
    assert strategy["FinalBakeTimeInMinutes"] == rollout.final_bake_minutes
    assert strategy["ReplicateTo"] == "NONE"


def test_stages_roll_out_at_their_own_pace() -> None:
    durations = [ENVIRONMENTS[env].flag_rollout.duration_minutes for env in ENVS]
    assert durations == sorted(durations)
    assert durations[0] < durations[-1]
    assert ENVIRONMENTS["prod"].flag_rollout.growth_factor <= 10


def test_a_broken_initial_document_fails_synth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / DEFAULT_DOCUMENT
    broken.write_text(json.dumps({"websocket_dual_publish": {"default": "yes"}}))
    monkeypatch.setattr(flags, "DOCUMENT_FILE", broken)
    with pytest.raises(SchemaValidationError, match="websocket_dual_publish"):
        flags.FlagsStack(App(), "Flags", config=ENVIRONMENTS["dev"])


# The schema --------------------------------------------------------------------------------


def test_schema_accepts_the_initial_document_and_rollout_steps() -> None:
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    for document in (default_document(), ROLLOUT, {}):
        assert _schema_accepts(document)
        assert _powertools_accepts(document)


BROKEN = {
    "no default": {"f": {"rules": {}}},
    "null default": {"f": {"default": None}},
    "string default of a boolean feature": {"f": {"default": ""}},
    "string default of a declared boolean feature": {"f": {"boolean_type": True, "default": "x"}},
    "rules not an object": {"f": {"default": True, "rules": [{"when_match": True}]}},
    "rule without conditions": {"f": {"default": True, "rules": {"r": {"when_match": True}}}},
    "empty conditions": {
        "f": {"default": True, "rules": {"r": {"when_match": True, "conditions": []}}}
    },
    "non-boolean when_match": {
        "f": {
            "default": True,
            "rules": {
                "r": {
                    "when_match": "x",
                    "conditions": [{"action": "EQUALS", "key": "k", "value": 1}],
                }
            },
        }
    },
    "unknown action": {
        "f": {
            "boolean_type": False,
            "default": "",
            "rules": {
                "r": {"when_match": "a", "conditions": [{"action": "LIKE", "key": "k", "value": 1}]}
            },
        }
    },
    "empty key": {
        "f": {
            "default": False,
            "rules": {
                "r": {
                    "when_match": True,
                    "conditions": [{"action": "EQUALS", "key": "", "value": 1}],
                }
            },
        }
    },
    "null value": {
        "f": {
            "default": False,
            "rules": {
                "r": {
                    "when_match": True,
                    "conditions": [{"action": "EQUALS", "key": "k", "value": None}],
                }
            },
        }
    },
    "modulo range without BASE": {
        "f": {
            "boolean_type": False,
            "default": "",
            "rules": {
                "r": {
                    "when_match": "pusher",
                    "conditions": [
                        {"action": "MODULO_RANGE", "key": "bucket", "value": {"START": 0, "END": 9}}
                    ],
                }
            },
        }
    },
    "modulo range of strings": {
        "f": {
            "boolean_type": False,
            "default": "",
            "rules": {
                "r": {
                    "when_match": "pusher",
                    "conditions": [
                        {
                            "action": "MODULO_RANGE",
                            "key": "bucket",
                            "value": {"BASE": "100", "START": 0, "END": 9},
                        }
                    ],
                }
            },
        }
    },
    "time range on the wrong key": {
        "f": {
            "default": False,
            "rules": {
                "r": {
                    "when_match": True,
                    "conditions": [
                        {
                            "action": "SCHEDULE_BETWEEN_TIME_RANGE",
                            "key": "NOW",
                            "value": {"START": "10:00", "END": "11:00"},
                        }
                    ],
                }
            },
        }
    },
    "boolean rule without when_match": {
        "f": {
            "default": False,
            "rules": {"r": {"conditions": [{"action": "EQUALS", "key": "k", "value": 1}]}},
        }
    },
    "empty rule name": {
        "f": {
            "default": False,
            "rules": {
                "": {
                    "when_match": True,
                    "conditions": [{"action": "EQUALS", "key": "k", "value": 1}],
                }
            },
        }
    },
    "hour out of range": {
        "f": {
            "default": False,
            "rules": {
                "r": {
                    "when_match": True,
                    "conditions": [
                        {
                            "action": "SCHEDULE_BETWEEN_TIME_RANGE",
                            "key": "CURRENT_TIME",
                            "value": {"START": "24:00", "END": "11:00"},
                        }
                    ],
                }
            },
        }
    },
    "not an object": ["websocket_provider"],
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_schema_refuses_what_powertools_refuses(name: str) -> None:
    document = BROKEN[name]
    assert not _powertools_accepts(document)
    assert not _schema_accepts(document)


_VALID_CONDITION = st.one_of(
    st.fixed_dictionaries(
        {
            "action": st.just("MODULO_RANGE"),
            "key": st.just("bucket"),
            "value": st.fixed_dictionaries(
                {"BASE": st.just(100), "START": st.integers(0, 49), "END": st.integers(50, 99)}
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "action": st.sampled_from(["EQUALS", "IN", "STARTSWITH", "ANY_IN_VALUE"]),
            "key": st.sampled_from(["subject", "tenant"]),
            "value": st.lists(st.sampled_from(["a", "b"]), max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {
            "action": st.just("SCHEDULE_BETWEEN_TIME_RANGE"),
            "key": st.just("CURRENT_TIME"),
            "value": st.fixed_dictionaries({"START": st.just("22:00"), "END": st.just("06:30")}),
        }
    ),
)
# Any action, key and value: mostly broken combinations.
_ANY_CONDITION = st.fixed_dictionaries(
    {
        "action": st.sampled_from(
            ["EQUALS", "IN", "MODULO_RANGE", "ANY_IN_VALUE", "SCHEDULE_BETWEEN_TIME_RANGE", "BOGUS"]
        ),
        "key": st.sampled_from(["bucket", "subject", "", "CURRENT_TIME"]),
        "value": st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-5, 200),
            st.text(max_size=5),
            st.lists(st.sampled_from(["a", "b"]), max_size=2),
            st.fixed_dictionaries(
                {"BASE": st.just(100), "START": st.integers(0, 49), "END": st.integers(50, 99)}
            ),
            st.fixed_dictionaries(
                {"START": st.sampled_from(["10:00", "25:00"]), "END": st.just("11:30")}
            ),
        ),
    }
)


def _rules(
    when_match: st.SearchStrategy[Any], *, loose: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """Rules by name; ``loose``: conditions and ``when_match`` may be missing too."""
    conditions = st.lists(
        st.one_of(_VALID_CONDITION, _VALID_CONDITION, _VALID_CONDITION, _ANY_CONDITION),
        min_size=0 if loose else 1,
        max_size=2,
    )
    if loose:
        rule = st.fixed_dictionaries(
            {"conditions": conditions}, optional={"when_match": when_match}
        )
    else:
        rule = st.fixed_dictionaries({"conditions": conditions, "when_match": when_match})
    names = st.text(max_size=3) if loose else st.text(min_size=1, max_size=3)
    return st.dictionaries(names, rule, max_size=2)


_ANYTHING = st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.integers(0, 3))
_FEATURE = st.one_of(
    # A boolean feature, a valued one, and anything at all.
    st.fixed_dictionaries(
        {"default": st.booleans()},
        optional={"boolean_type": st.just(True), "rules": _rules(st.booleans())},
    ),
    st.fixed_dictionaries(
        {"boolean_type": st.just(False), "default": st.text(max_size=3)},
        optional={"rules": _rules(st.text(max_size=3))},
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "default": _ANYTHING,
            "boolean_type": st.booleans(),
            "rules": _rules(_ANYTHING, loose=True),
        },
    ),
)


@settings(max_examples=300)  # cheap examples; the profile keeps the seed fixed
@given(st.dictionaries(st.sampled_from(["email_provider", "websocket_provider", "x"]), _FEATURE))
def test_property_schema_and_powertools_agree(document: dict[str, Any]) -> None:
    """On documents made of valid and broken pieces, AppConfig's validator (the schema)
    accepts exactly what the runtime will load."""
    assert _schema_accepts(document) == _powertools_accepts(document)


# Settings and grants -----------------------------------------------------------------------


def _runtime_processes(
    synthesized: Synthesized, env: str
) -> list[tuple[str, dict[str, Any], dict[str, Any], list[str]]]:
    """(where, settings, template, role logical ids) of every runtime function and task."""
    found = []
    for stack in synthesized.stack_names(env):
        template = synthesized.template_json(env, stack)
        for lid, fn in resources(template, "AWS::Lambda::Function").items():
            props = fn["Properties"]
            if props.get("Handler", "").startswith("milequest."):
                role = props["Role"]["Fn::GetAtt"][0]
                found.append(
                    (f"{stack}/{lid}", props["Environment"]["Variables"], template, [role])
                )
        for lid, task in resources(template, "AWS::ECS::TaskDefinition").items():
            props = task["Properties"]
            (container,) = props["ContainerDefinitions"]
            variables = {item["Name"]: item["Value"] for item in container["Environment"]}
            role = props["TaskRoleArn"]["Fn::GetAtt"][0]
            found.append((f"{stack}/{lid}", variables, template, [role]))
    return found


def _exported_ids(synthesized: Synthesized, env: str) -> dict[str, str]:
    """Resource type suffix -> the export name of its id in the Flags stack."""
    template = synthesized.template_json(env, "Flags")
    by_ref = {
        json.dumps(output["Value"]): output["Export"]["Name"]
        for output in template["Outputs"].values()
        if "Export" in output
    }
    return {
        kind: by_ref[json.dumps({"Ref": lid})]
        for kind in FLAG_VARIABLES.values()
        for lid in resources(template, f"AWS::AppConfig::{kind}")
    }


@pytest.mark.parametrize("env", ENVS)
def test_every_process_reads_this_stages_profile(synthesized: Synthesized, env: str) -> None:
    exports = _exported_ids(synthesized, env)
    assert sorted(exports) == sorted(FLAG_VARIABLES.values())
    processes = _runtime_processes(synthesized, env)
    # Six handlers (the fan-out worker's too) and the HTTP app, on Lambda or the container.
    assert len(processes) == 7
    for where, variables, _, _ in processes:
        for name, kind in FLAG_VARIABLES.items():
            assert variables[name] == {"Fn::ImportValue": exports[kind]}, (where, name)
        # The cache keeps its default; the file store is for local runs only.
        assert "FEATURE_FLAGS_MAX_AGE" not in variables, where
        assert "FEATURE_FLAGS_FILE" not in variables, where


@pytest.mark.parametrize("env", ENVS)
def test_read_grant_is_exactly_this_profile(synthesized: Synthesized, env: str) -> None:
    exports = _exported_ids(synthesized, env)
    config = ENVIRONMENTS[env]
    expected_arn = {
        "Fn::Join": [
            "",
            [
                f"arn:aws:appconfig:{config.region}:{config.account}:application/",
                {"Fn::ImportValue": exports["Application"]},
                "/environment/",
                {"Fn::ImportValue": exports["Environment"]},
                "/configuration/",
                {"Fn::ImportValue": exports["ConfigurationProfile"]},
            ],
        ]
    }
    processes = _runtime_processes(synthesized, env)
    assert processes
    granted_roles = set()
    for stack in synthesized.stack_names(env):
        template = synthesized.template_json(env, stack)
        for policy in resources(template, "AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = (
                    statement["Action"]
                    if isinstance(statement["Action"], list)
                    else [statement["Action"]]
                )
                if not any(action.startswith("appconfig:") for action in actions):
                    continue
                assert set(actions) == READ_ACTIONS, statement
                assert statement["Effect"] == "Allow"
                assert statement["Resource"] == expected_arn
                granted_roles |= {(stack, role["Ref"]) for role in policy["Properties"]["Roles"]}
    expected_roles = {
        (where.split("/")[0], role) for where, _, _, roles in processes for role in roles
    }
    assert granted_roles == expected_roles


@pytest.mark.parametrize("env", ENVS)
def test_applications_get_a_reader_policy_for_the_same_profile(
    synthesized: Synthesized, env: str
) -> None:
    template = synthesized.template_json(env, "Flags")
    (policy_id, policy), *others = resources(template, "AWS::IAM::ManagedPolicy").items()
    assert others == []
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert set(statement["Action"]) == READ_ACTIONS
    ids = {
        kind: next(iter(resources(template, f"AWS::AppConfig::{kind}")))
        for kind in FLAG_VARIABLES.values()
    }
    parts = statement["Resource"]["Fn::Join"][1]
    assert [p for p in parts if isinstance(p, dict)] == [
        {"Ref": ids["Application"]},
        {"Ref": ids["Environment"]},
        {"Ref": ids["ConfigurationProfile"]},
    ]
    assert template["Outputs"]["FlagsReaderPolicyArn"]["Value"] == {"Ref": policy_id}
