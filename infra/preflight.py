"""Checks an AWS account before ``cdk deploy``, with the operator's credentials (read-only).

``python -m infra.preflight --env dev`` (``make preflight ENV=dev``) prints one line per
finding, each failure or warning with its fix, and exits 1 when anything fails:

- the credentials belong to the account the stage is pinned to;
- the region offers SES v2 and API Gateway WebSocket APIs;
- the Lambda concurrency quota leaves room for what the stage reserves;
- SES production access matches ``ses_sandbox``; the SES sending quota;
- the CDK bootstrap stack is there and recent enough for the templates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import boto3
from aws_cdk import aws_lambda as lambda_
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from constructs import Construct

from .config import ENVIRONMENTS, REQUIRED_SERVICES, EnvironmentConfig, service_regions

Status = Literal["OK", "WARN", "FAIL"]

# Lambda keeps this much of the account's concurrency unreserved (all of it below 100).
MIN_UNRESERVED = 100
CONCURRENCY_QUOTA = "Service Quotas: AWS Lambda 'Concurrent executions' (L-B99A9384)"
# The synthesized templates refuse bootstrap versions 1-5 (their CheckBootstrapVersion rule).
MIN_BOOTSTRAP_VERSION = 6
BOOTSTRAP_STACK = "CDKToolkit"
BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
# Past this share of the 24-hour quota, a busy day can hit the limit.
QUOTA_WARNING_SHARE = 0.8
_RETRIES = Config(retries={"mode": "standard", "max_attempts": 3})


@dataclass(frozen=True)
class Finding:
    """One result: what was found and, unless all is well, how to fix it."""

    status: Status
    check: str
    message: str
    fix: str | None = None

    def line(self) -> str:
        text = f"{self.status:<4} {self.check}: {self.message}"
        return f"{text} Fix: {self.fix}" if self.fix else text


@dataclass(frozen=True)
class Reservation:
    """What a stage reserves: its functions and the concurrency reserved for them in total."""

    functions: int
    reserved: int


class Preflight:
    """The checks for one environment; ``clients`` overrides boto3 clients by service name."""

    def __init__(
        self,
        config: EnvironmentConfig,
        session: boto3.Session,
        reservation: Reservation,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.session = session
        self.reservation = reservation
        self.clients = dict(clients or {})

    def client(self, service: str) -> Any:
        if service not in self.clients:
            self.clients[service] = self.session.client(
                service,  # type: ignore[call-overload]
                region_name=self.config.region,
                config=_RETRIES,
            )
        return self.clients[service]

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        for check in (
            self.account,
            self.regions,
            self.lambda_concurrency,
            self.ses_account,
            self.bootstrap,
        ):
            findings.extend(_guarded(check.__name__.replace("_", "-"), check))
            if any(f.check == "credentials" for f in findings):
                break  # every other call would fail the same way
        return findings

    # Checks ------------------------------------------------------------------------------

    def account(self) -> Iterator[Finding]:
        actual = self.client("sts").get_caller_identity()["Account"]
        expected = self.config.account
        if actual == expected:
            yield Finding("OK", "account", f"credentials are for {expected}")
        else:
            yield Finding(
                "FAIL",
                "account",
                f"credentials are for account {actual}, {self.config.name} is pinned to {expected}",
                f"use credentials for {expected}, or set `account` for {self.config.name} in "
                "infra/config.py",
            )

    def regions(self) -> Iterator[Finding]:
        region = self.config.region
        missing = [
            label
            for service, label in REQUIRED_SERVICES.items()
            if region not in service_regions(service)
        ]
        if missing:  # EnvironmentConfig refuses such a region; kept for edited configs
            yield Finding(
                "FAIL",
                "region",
                f"{region} does not offer {' or '.join(missing)}",
                f"set `region` for {self.config.name} in infra/config.py to one that does",
            )
            return
        # Reaching the API proves the endpoint and the credentials' access to it (SES v2 is
        # reached by the SES checks).
        self.client("apigatewayv2").get_apis(MaxResults="1")
        yield Finding("OK", "region", f"{region} offers {' and '.join(REQUIRED_SERVICES.values())}")

    def lambda_concurrency(self) -> Iterator[Finding]:
        settings = self.client("lambda").get_account_settings()["AccountLimit"]
        yield concurrency_finding(
            self.config,
            limit=settings["ConcurrentExecutions"],
            unreserved=settings["UnreservedConcurrentExecutions"],
            already_reserved=self._reserved_by_stage(),
            reservation=self.reservation,
        )

    def ses_account(self) -> Iterator[Finding]:
        yield from ses_findings(self.config, self.client("sesv2").get_account())

    def bootstrap(self) -> Iterator[Finding]:
        cloudformation = self.client("cloudformation")
        try:
            stack = cloudformation.describe_stacks(StackName=BOOTSTRAP_STACK)["Stacks"][0]
        except ClientError as error:
            if _code(error) != "ValidationError":  # "Stack with id ... does not exist"
                raise
            stack = None
        version: int | None = None
        if stack is not None:
            try:
                parameter = self.client("ssm").get_parameter(Name=BOOTSTRAP_VERSION_PARAMETER)
                version = int(parameter["Parameter"]["Value"])
            except ClientError as error:
                if _code(error) != "ParameterNotFound":
                    raise
        yield bootstrap_finding(self.config, stack, version)

    # Helpers -----------------------------------------------------------------------------

    def _reserved_by_stage(self) -> int:
        """Concurrency already reserved for this stage's deployed functions (a redeploy)."""
        client = self.client("lambda")
        prefix = f"{self.config.resource_prefix}-"
        total = 0
        for page in client.get_paginator("list_functions").paginate():
            for function in page["Functions"]:
                if function["FunctionName"].startswith(prefix):
                    concurrency = client.get_function_concurrency(
                        FunctionName=function["FunctionName"]
                    )
                    total += concurrency.get("ReservedConcurrentExecutions", 0)
        return total


def concurrency_finding(
    config: EnvironmentConfig,
    *,
    limit: int,
    unreserved: int,
    already_reserved: int,
    reservation: Reservation,
) -> Finding:
    """Whether the account can take the stage's reservations (``unreserved`` counts them out)."""
    minimum = min(MIN_UNRESERVED, limit)
    available = unreserved + already_reserved - minimum
    if reservation.reserved == 0:
        if limit < MIN_UNRESERVED:
            return Finding(
                "WARN",
                "lambda-concurrency",
                f"the account runs at most {limit} concurrent executions in {config.region}",
                f"request more before production traffic ({CONCURRENCY_QUOTA})",
            )
        return Finding(
            "OK",
            "lambda-concurrency",
            f"quota {limit}, {unreserved} unreserved; {config.name} reserves none",
        )
    if reservation.reserved > available:
        per_function = max(available, 0) // max(reservation.functions, 1)
        fix = (
            f"set reserved_concurrency to at most {per_function} for {config.name}"
            if per_function >= 1
            else f"set reserved_concurrency=None for {config.name}"
        )
        return Finding(
            "FAIL",
            "lambda-concurrency",
            f"{config.name} reserves {reservation.reserved} ({reservation.functions} functions) "
            f"but only {max(available, 0)} can be reserved: Lambda keeps {minimum} of the "
            f"quota of {limit} unreserved",
            f"{fix} in infra/config.py, or request a higher quota ({CONCURRENCY_QUOTA})",
        )
    return Finding(
        "OK",
        "lambda-concurrency",
        f"{config.name} reserves {reservation.reserved} of {available} reservable (quota {limit})",
    )


def ses_findings(config: EnvironmentConfig, account: Mapping[str, Any]) -> Iterator[Finding]:
    """SES production access against ``ses_sandbox``, sending status and the send quota."""
    production = bool(account.get("ProductionAccessEnabled"))
    if not config.ses_sandbox and not production:
        yield Finding(
            "FAIL",
            "ses-production-access",
            f"{config.name} has ses_sandbox=False but SES in {config.region} is in the "
            "sandbox (verified recipients only, 200 messages a day)",
            "request production access (`aws sesv2 put-account-details "
            "--production-access-enabled ...`, see docs/operations.md) or set "
            "ses_sandbox=True",
        )
    elif config.ses_sandbox and production:
        yield Finding(
            "WARN",
            "ses-production-access",
            f"SES in {config.region} has production access but {config.name} has "
            "ses_sandbox=True, which refuses unverified recipients",
            f"set ses_sandbox=False for {config.name} in infra/config.py",
        )
    else:
        mode = "sandbox" if config.ses_sandbox else "production access"
        yield Finding("OK", "ses-production-access", f"{mode}, as configured")
    if not account.get("SendingEnabled", True):
        yield Finding(
            "FAIL",
            "ses-sending",
            f"sending is paused for the account in {config.region} "
            f"(enforcement status {account.get('EnforcementStatus', 'unknown')})",
            "see the SES console's reputation page; resume with "
            "`aws sesv2 put-account-sending-attributes --sending-enabled`",
        )
    quota = account.get("SendQuota", {})
    maximum = float(quota.get("Max24HourSend", 0))
    sent = float(quota.get("SentLast24Hours", 0))
    rate = float(quota.get("MaxSendRate", 0))
    summary = f"{sent:.0f} of {maximum:.0f} messages sent in 24 h, at most {rate:g}/s"
    if maximum > 0 and sent >= QUOTA_WARNING_SHARE * maximum:
        yield Finding(
            "WARN",
            "ses-quota",
            summary,
            "request a higher sending quota (Service Quotas: Amazon SES 'Sending quota')",
        )
    else:
        yield Finding("OK", "ses-quota", summary)


def bootstrap_finding(
    config: EnvironmentConfig, stack: Mapping[str, Any] | None, version: int | None
) -> Finding:
    """The CDK bootstrap stack of the account and region, and its version."""
    target = f"aws://{config.account}/{config.region}"
    bootstrap = f"npx --no-install cdk bootstrap {target}"
    if stack is None:
        return Finding("FAIL", "cdk-bootstrap", f"{target} is not bootstrapped", bootstrap)
    status = str(stack.get("StackStatus", ""))
    if not status.endswith("_COMPLETE") or "ROLLBACK" in status or "DELETE" in status:
        return Finding(
            "FAIL", "cdk-bootstrap", f"{BOOTSTRAP_STACK} is {status}", f"repair it: {bootstrap}"
        )
    if version is None or version < MIN_BOOTSTRAP_VERSION:
        found = "no version parameter" if version is None else f"version {version}"
        return Finding(
            "FAIL",
            "cdk-bootstrap",
            f"{BOOTSTRAP_STACK} has {found}; the templates need {MIN_BOOTSTRAP_VERSION} or later",
            f"upgrade it: {bootstrap}",
        )
    return Finding("OK", "cdk-bootstrap", f"{BOOTSTRAP_STACK} version {version}")


def stage_reservation(config: EnvironmentConfig) -> Reservation:
    """The functions of ``config``'s stage and the concurrency they reserve (no synthesis)."""
    from aws_cdk import App

    from .stage import MileQuestStage

    app = App(context={"aws:cdk:bundling-stacks": []})
    return reservation_of(MileQuestStage(app, config))


def reservation_of(stage: Construct) -> Reservation:
    """The runtime functions under ``stage`` and the concurrency they reserve."""
    functions = [
        construct
        for construct in stage.node.find_all()
        if isinstance(construct, lambda_.CfnFunction)
        and str(construct.handler).startswith("milequest.")
    ]
    reserved = sum(int(f.reserved_concurrent_executions or 0) for f in functions)
    return Reservation(functions=len(functions), reserved=reserved)


def _guarded(check: str, run: Callable[[], Iterator[Finding]]) -> list[Finding]:
    """A check's findings, or one FAIL line naming what the credentials could not do."""
    try:
        return list(run())
    except NoCredentialsError:
        return [
            Finding(
                "FAIL",
                "credentials",
                "no AWS credentials found",
                "set AWS_PROFILE (or pass --profile) or the AWS_* variables",
            )
        ]
    except ClientError as error:
        operation = error.operation_name
        code = _code(error)
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
            fix = f"allow the operator's role to call {operation}"
        elif code in {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId"}:
            return [
                Finding(
                    "FAIL", "credentials", f"the credentials are refused ({code})", "renew them"
                )
            ]
        else:
            fix = "retry; if it persists, check the service's health in the region"
        return [Finding("FAIL", check, f"{operation} failed: {code}", fix)]
    except BotoCoreError as error:
        return [
            Finding(
                "FAIL",
                check,
                f"{type(error).__name__}: {error}",
                "check the network and that the region offers the service",
            )
        ]


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.preflight", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--env", required=True, choices=sorted(ENVIRONMENTS))
    parser.add_argument("--profile", help="AWS profile to read with (default: the usual chain)")
    args = parser.parse_args(argv)
    config = ENVIRONMENTS[args.env]
    session = boto3.Session(profile_name=args.profile, region_name=config.region)
    findings = Preflight(config, session, stage_reservation(config)).run()
    for finding in findings:
        print(finding.line())
    failed = sum(f.status == "FAIL" for f in findings)
    print(f"{args.env}: {failed} failing check(s)" if failed else f"{args.env}: ready to deploy")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
