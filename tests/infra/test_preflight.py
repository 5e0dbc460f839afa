"""`make preflight`: the account checks before a deploy.

STS, CloudFormation, SSM and API Gateway run against moto (in process). moto implements
neither Lambda's GetAccountSettings nor SES v2's GetAccount, so those clients are botocore
Stubbers, which check every request and response against the services' models.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from infra import preflight
from infra.config import ENVIRONMENTS, EnvironmentConfig
from infra.preflight import (
    BOOTSTRAP_STACK,
    BOOTSTRAP_VERSION_PARAMETER,
    MIN_BOOTSTRAP_VERSION,
    Finding,
    Preflight,
    Reservation,
    concurrency_finding,
    reservation_of,
)

from .conftest import Synthesized, variant

REGION = ENVIRONMENTS["prod"].region
BOOTSTRAP_TEMPLATE = """{
  "Resources": {"Bucket": {"Type": "AWS::S3::Bucket"}},
  "Outputs": {"BootstrapVersion": {"Value": "%d"}}
}"""
HEALTHY_SES = {
    "ProductionAccessEnabled": True,
    "SendingEnabled": True,
    "EnforcementStatus": "HEALTHY",
    "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 120.0},
}
NONE_RESERVED = Reservation(functions=6, reserved=0)
LINE = re.compile(r"^(OK  |WARN|FAIL) [a-z0-9-]+: .+")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    """moto as the prod account, bootstrapped."""
    monkeypatch.setenv("MOTO_ACCOUNT_ID", ENVIRONMENTS["prod"].account)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        bootstrap(session, MIN_BOOTSTRAP_VERSION + 20)
        yield session


def bootstrap(session: boto3.Session, version: int) -> None:
    session.client("cloudformation").create_stack(
        StackName=BOOTSTRAP_STACK, TemplateBody=BOOTSTRAP_TEMPLATE % version
    )
    session.client("ssm").put_parameter(
        Name=BOOTSTRAP_VERSION_PARAMETER, Value=str(version), Type="String", Overwrite=True
    )


def stubbed(
    session: boto3.Session,
    *,
    limit: int = 1000,
    unreserved: int = 1000,
    deployed: dict[str, int] | None = None,
    ses: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Lambda and SES v2 clients answering as given (`deployed`: function -> reservation)."""
    lambda_client = session.client("lambda")
    stub = Stubber(lambda_client)
    stub.add_response(
        "get_account_settings",
        {
            "AccountLimit": {
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": unreserved,
            }
        },
    )
    deployed = deployed or {}
    stub.add_response(
        "list_functions",
        {"Functions": [{"FunctionName": name} for name in [*deployed, "someone-elses-fn"]]},
    )
    for name, reserved in deployed.items():
        stub.add_response(
            "get_function_concurrency",
            {"ReservedConcurrentExecutions": reserved},
            {"FunctionName": name},
        )
    stub.activate()
    sesv2 = session.client("sesv2")
    ses_stub = Stubber(sesv2)
    ses_stub.add_response("get_account", ses if ses is not None else HEALTHY_SES)
    ses_stub.activate()
    return {"lambda": lambda_client, "sesv2": sesv2}


def run(
    session: boto3.Session,
    config: EnvironmentConfig | None = None,
    reservation: Reservation = NONE_RESERVED,
    **answers: Any,
) -> dict[str, Finding]:
    config = config or ENVIRONMENTS["prod"]
    findings = Preflight(config, session, reservation, stubbed(session, **answers)).run()
    for finding in findings:
        assert LINE.match(finding.line()), finding.line()
        assert (finding.fix is None) == (finding.status == "OK"), finding
    by_check = {f.check: f for f in findings}
    assert len(by_check) == len(findings)
    return by_check


def test_a_ready_account_passes_every_check(aws: boto3.Session) -> None:
    findings = run(aws)
    assert set(findings) == {
        "account",
        "region",
        "lambda-concurrency",
        "ses-production-access",
        "ses-quota",
        "cdk-bootstrap",
    }
    assert {f.status for f in findings.values()} == {"OK"}
    assert findings["ses-quota"].message == "120 of 50000 messages sent in 24 h, at most 14/s"
    assert findings["cdk-bootstrap"].message == f"CDKToolkit version {MIN_BOOTSTRAP_VERSION + 20}"


def test_credentials_of_another_account(
    aws: boto3.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    findings = run(aws, ENVIRONMENTS["dev"])
    account = findings["account"]
    assert account.status == "FAIL"
    assert ENVIRONMENTS["prod"].account in account.message
    assert ENVIRONMENTS["dev"].account in account.message
    assert account.fix is not None
    assert "infra/config.py" in account.fix


def test_missing_or_old_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_ACCOUNT_ID", ENVIRONMENTS["prod"].account)
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        missing = run(session)["cdk-bootstrap"]
        assert missing.status == "FAIL"
        assert missing.fix == f"npx --no-install cdk bootstrap aws://222222222222/{REGION}"
        bootstrap(session, MIN_BOOTSTRAP_VERSION - 1)
        old = run(session)["cdk-bootstrap"]
        assert old.status == "FAIL"
        assert f"version {MIN_BOOTSTRAP_VERSION - 1}" in old.message
        assert old.fix is not None
        assert old.fix.startswith("upgrade it")


def test_reservations_on_a_new_account(aws: boto3.Session) -> None:
    """New accounts run 10 concurrent executions and refuse any reservation."""
    findings = run(aws, reservation=Reservation(6, 30), limit=10, unreserved=10)
    concurrency = findings["lambda-concurrency"]
    assert concurrency.status == "FAIL"
    assert "reserves 30 (6 functions) but only 0 can be reserved" in concurrency.message
    assert concurrency.fix is not None
    assert concurrency.fix.startswith("set reserved_concurrency=None for prod")
    # Reserving nothing deploys, with a warning about the low quota.
    assert run(aws, limit=10, unreserved=10)["lambda-concurrency"].status == "WARN"


def test_a_redeploy_counts_the_stages_own_reservations(aws: boto3.Session) -> None:
    """The stage's deployed functions already hold their reservations."""
    deployed = {"milequest-prod-realtime-Connect-1": 20, "milequest-prod-email-Ses-2": 20}
    ok = run(aws, reservation=Reservation(2, 40), limit=200, unreserved=160, deployed=deployed)
    assert ok["lambda-concurrency"].status == "OK"
    tight = run(aws, reservation=Reservation(2, 120), limit=200, unreserved=160, deployed=deployed)
    concurrency = tight["lambda-concurrency"]
    assert concurrency.status == "FAIL"
    assert concurrency.fix is not None
    assert "at most 50 for prod" in concurrency.fix


@pytest.mark.parametrize(
    ("sandbox", "production", "status"),
    [(False, False, "FAIL"), (True, True, "WARN"), (False, True, "OK"), (True, False, "OK")],
)
def test_ses_production_access_against_the_sandbox_flag(
    aws: boto3.Session, sandbox: bool, production: bool, status: str
) -> None:
    config = variant("prod", ses_sandbox=sandbox)
    answer = HEALTHY_SES | {"ProductionAccessEnabled": production}
    finding = run(aws, config, ses=answer)["ses-production-access"]
    assert finding.status == status
    if status == "FAIL":
        assert finding.fix is not None
        assert "put-account-details" in finding.fix


def test_ses_paused_or_near_its_quota(aws: boto3.Session) -> None:
    answer = HEALTHY_SES | {
        "SendingEnabled": False,
        "EnforcementStatus": "SHUTDOWN",
        "SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 190.0},
    }
    findings = run(aws, ses=answer)
    assert findings["ses-sending"].status == "FAIL"
    assert "SHUTDOWN" in findings["ses-sending"].message
    assert findings["ses-quota"].status == "WARN"


def test_a_refused_call_names_what_to_allow(aws: boto3.Session) -> None:
    clients = stubbed(aws)
    sesv2 = boto3.Session(region_name=REGION).client("sesv2")
    stub = Stubber(sesv2)
    stub.add_client_error("get_account", "AccessDeniedException", http_status_code=403)
    stub.activate()
    clients["sesv2"] = sesv2
    findings = Preflight(ENVIRONMENTS["prod"], aws, NONE_RESERVED, clients).run()
    (ses,) = [f for f in findings if f.check == "ses-account"]
    assert ses.status == "FAIL"
    assert ses.fix == "allow the operator's role to call GetAccount"
    assert any(f.check == "cdk-bootstrap" and f.status == "OK" for f in findings)


def test_without_credentials_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    # Building the stage is covered below (reservation_of); here only the command.
    monkeypatch.setattr(preflight, "stage_reservation", lambda config: NONE_RESERVED)
    assert preflight.main(["--env", "dev"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("FAIL credentials: no AWS credentials found Fix: ")
    assert lines[-1] == "dev: 1 failing check(s)"
    assert len(lines) == 2


def test_stage_reservation_counts_runtime_functions(
    synthesized: Synthesized, certified: Synthesized
) -> None:
    # Six handlers (the fan-out worker's too) and the HTTP app.
    assert reservation_of(synthesized.stages["dev"]) == Reservation(functions=7, reserved=0)
    # staging on the container target: no HTTP function; 5 reserved for each of the others.
    assert reservation_of(certified.stages["staging"]) == Reservation(functions=6, reserved=30)


@given(
    limit=st.integers(1, 5000),
    unreserved_share=st.floats(0, 1),
    already=st.integers(0, 500),
    functions=st.integers(1, 8),
    per_function=st.integers(0, 300),
)
def test_property_concurrency_fails_exactly_when_too_little_would_stay_unreserved(
    limit: int, unreserved_share: float, already: int, functions: int, per_function: int
) -> None:
    unreserved = int(limit * unreserved_share)
    reservation = Reservation(functions, functions * per_function)
    finding = concurrency_finding(
        ENVIRONMENTS["staging"],
        limit=limit,
        unreserved=unreserved,
        already_reserved=already,
        reservation=reservation,
    )
    reservable = unreserved + already - min(100, limit)
    if reservation.reserved == 0:
        assert finding.status == ("WARN" if limit < 100 else "OK")
    elif reservation.reserved > reservable:
        assert finding.status == "FAIL"
        assert finding.fix is not None
        if match := re.search(r"at most (\d+)", finding.fix):
            # The suggested reservation fits.
            assert 1 <= int(match[1]) * functions <= reservable
        else:
            assert reservable < functions
    else:
        assert finding.status == "OK"
