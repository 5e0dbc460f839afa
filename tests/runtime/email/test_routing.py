"""Email routing for migrations: sticky per-recipient shares by flag, run-time switching,
failover only where the primary cannot have taken the message, verified providers only.

SES (the local SES v2 endpoint) is the primary and Resend (the local Resend API) the other
provider, as in a migration from one to the other.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from milequest.services import flags
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    RoutedEmailService,
    SendResult,
    create_email_service,
)
from milequest.services.metrics import InMemorySink

from tests.runtime.email import hostile

from .api_server import ApiServer
from .resend_server import ResendState
from .ses_server import SesServer


def _share(percent: int, flag: str = "email_provider", value: str = "resend") -> dict[str, Any]:
    return {
        flag: {
            "boolean_type": False,
            "default": "",
            "rules": {
                f"{percent} % to {value}": {
                    "when_match": value,
                    "conditions": [
                        {
                            "action": "MODULO_RANGE",
                            "key": "bucket",
                            "value": {"BASE": 100, "START": 0, "END": percent - 1},
                        }
                    ],
                }
            },
        }
    }


NO_RULES = {"email_provider": {"boolean_type": False, "default": ""}}


def _write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document))
    stamp = path.stat().st_mtime + 1  # a new modification time, even within one clock tick
    os.utime(path, (stamp, stamp))


@pytest.fixture
def flag_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "flags.json"
    _write(path, NO_RULES)
    monkeypatch.setenv("FEATURE_FLAGS_FILE", str(path))
    flags.reset_flags()
    yield path
    flags.reset_flags()


@pytest.fixture
def metrics() -> InMemorySink:
    return InMemorySink()


@pytest.fixture
def routed(
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
    flag_file: Path,
    metrics: InMemorySink,
    monkeypatch: pytest.MonkeyPatch,
    no_waits: list[float],
) -> RoutedEmailService:
    monkeypatch.setenv("EMAIL_PROVIDER", "ses")
    monkeypatch.setenv("EMAIL_ROUTING_PROVIDERS", "resend")
    monkeypatch.setenv("EMAIL_FAILOVER_PROVIDER", "resend")
    monkeypatch.setenv("SES_MAX_SEND_RATE", "10000")
    monkeypatch.setenv("SES_MAX_ATTEMPTS", "2")
    service = create_email_service(metrics=metrics)
    assert isinstance(service, RoutedEmailService)
    return service


def _message(to: str) -> dict[str, str]:
    return {"to": to, "subject": "Your week", "text": "12.4 miles"}


def _resend_recipients(resend_api: ApiServer[ResendState]) -> list[str]:
    return [to for sent in resend_api.state.sent for to in sent["to"]]


def _ses_recipients(ses_server: SesServer) -> list[str]:
    return [to for sent in ses_server.state.sent for to in sent["Destination"]["ToAddresses"]]


def test_ten_percent_of_ten_thousand_recipients_and_each_always_on_its_side(
    routed: RoutedEmailService, flag_file: Path
) -> None:
    _write(flag_file, _share(10))
    recipients = [f"walker{n}@milequest.example" for n in range(10_000)]
    sides = [routed.provider_for(_message(r)).provider_name for r in recipients]
    share = Counter(sides)["resend"] / len(recipients)
    assert 0.085 <= share <= 0.115
    again = [routed.provider_for(_message(r.upper())).provider_name for r in recipients[:2_000]]
    assert again == sides[:2_000]  # sticky, whatever the case of the address


def test_each_message_goes_where_routing_says_and_the_result_names_it(
    routed: RoutedEmailService,
    flag_file: Path,
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
    metrics: InMemorySink,
) -> None:
    _write(flag_file, _share(50))
    recipients = [f"walker{n}@milequest.example" for n in range(40)]
    results = [routed.send_email(_message(r)) for r in recipients]
    expected = {r: routed.provider_for(_message(r)).provider_name for r in recipients}
    assert {r: result.provider for r, result in zip(recipients, results, strict=True)} == expected
    to_resend = sorted(r for r, side in expected.items() if side == "resend")
    assert 0 < len(to_resend) < 40
    assert sorted(_resend_recipients(resend_api)) == to_resend
    assert sorted(_ses_recipients(ses_server)) == sorted(set(recipients) - set(to_resend))
    # Each provider's own metrics, side by side: the Provider dimension.
    calls = {
        p: metrics.total("Calls", Provider=p, Operation="send_email") for p in ("ses", "resend")
    }
    assert calls == {"ses": 40 - len(to_resend), "resend": len(to_resend)}


def test_changing_the_flag_file_moves_new_sends_without_a_restart(
    routed: RoutedEmailService, flag_file: Path, resend_api: ApiServer[ResendState]
) -> None:
    assert routed.send_email(_message("ada@milequest.example")).provider == "ses"
    _write(flag_file, _share(100))
    assert routed.send_email(_message("ada@milequest.example")).provider == "resend"
    _write(flag_file, NO_RULES)
    assert routed.send_email(_message("ada@milequest.example")).provider == "ses"
    assert _resend_recipients(resend_api) == ["ada@milequest.example"]


def test_the_primary_answering_503_until_its_circuit_opens_fails_over(
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
    flag_file: Path,
    metrics: InMemorySink,
    monkeypatch: pytest.MonkeyPatch,
    routed: RoutedEmailService,
) -> None:
    monkeypatch.setenv("EMAIL_BREAKER_FAILURES", "2")
    service = create_email_service(metrics=metrics)
    ses_server.state.unavailable_sends = -1
    recipients = [f"walker{n}@milequest.example" for n in range(5)]
    results = [service.send_email(_message(r)) for r in recipients]
    assert [r.provider for r in results] == ["resend"] * 5
    assert sorted(_resend_recipients(resend_api)) == recipients
    assert ses_server.state.sends() == 2 * 2  # two calls of two attempts, then the circuit
    assert ses_server.state.sent == []
    assert metrics.total("Failovers", Provider="ses", Target="resend") == 5


def test_a_rejected_message_does_not_fail_over(
    routed: RoutedEmailService, ses_server: SesServer, resend_api: ApiServer[ResendState]
) -> None:
    ses_server.state.rejected.add("walker@milequest.example")
    with pytest.raises(EmailError) as rejected:
        routed.send_email(_message("walker@milequest.example"))
    assert rejected.value.code is EmailErrorCode.MESSAGE_REJECTED
    assert resend_api.state.sent == []


def test_a_timeout_after_sending_does_not_fail_over(
    routed: RoutedEmailService,
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_CALL_TIMEOUT", "1")
    service = create_email_service()
    ses_server.state.delay = 2.0  # SES may have taken it: sending it elsewhere could double it
    with pytest.raises(EmailError) as timed_out:
        service.send_email(_message("walker@milequest.example"))
    assert timed_out.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    deadline = time.monotonic() + 10
    while not ses_server.state.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ses_recipients(ses_server) == ["walker@milequest.example"]  # SES did take it
    assert resend_api.state.sent == []


def test_a_suppressed_recipient_is_refused_by_both(
    routed: RoutedEmailService,
    flag_file: Path,
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
) -> None:
    routed.suppress_email("gone@milequest.example", "BOUNCE")
    for document in (NO_RULES, _share(100)):
        _write(flag_file, document)
        with pytest.raises(EmailError) as refused:
            routed.send_email(_message("gone@milequest.example"))
        assert refused.value.code is EmailErrorCode.SUPPRESSED
        assert refused.value.provider == routed.provider_for(_message("x@y.example")).provider_name
    ses_server.state.unavailable_sends = -1  # even with the primary down: no failover
    _write(flag_file, NO_RULES)
    with pytest.raises(EmailError) as refused:
        routed.send_email(_message("gone@milequest.example"))
    assert refused.value.code is EmailErrorCode.SUPPRESSED
    assert ses_server.state.sends() == 0
    assert resend_api.state.sent == []


def test_a_provider_whose_sending_domain_is_not_verified_is_never_chosen(
    routed: RoutedEmailService,
    flag_file: Path,
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
    metrics: InMemorySink,
) -> None:
    resend_api.state.domains.clear()
    _write(flag_file, _share(100))
    assert routed.send_email(_message("ada@milequest.example")).provider == "ses"
    assert metrics.total("RoutingRefused", Target="resend") >= 1
    ses_server.state.unavailable_sends = -1
    with pytest.raises(EmailError) as failed:  # nor failed over to
        routed.send_email(_message("ada@milequest.example"))
    assert failed.value.provider == "ses"
    assert resend_api.state.sent == []


def test_the_failover_flag_overrides_the_setting(
    routed: RoutedEmailService,
    flag_file: Path,
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
) -> None:
    _write(flag_file, {"email_failover_provider": {"boolean_type": False, "default": "ses"}})
    ses_server.state.unavailable_sends = -1
    with pytest.raises(EmailError):  # the flag names the provider that failed: no failover
        routed.send_email(_message("ada@milequest.example"))
    assert resend_api.state.sent == []


def test_messages_routed_to_the_failover_provider_fail_over_to_the_primary(
    routed: RoutedEmailService,
    flag_file: Path,
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
) -> None:
    _write(flag_file, _share(100))
    resend_api.state.unavailable = 100
    result = routed.send_email(_message("ada@milequest.example"))
    assert result.provider == "ses"
    assert _ses_recipients(ses_server) == ["ada@milequest.example"]


def test_bulk_sends_route_each_message_and_fail_over_in_input_order(
    routed: RoutedEmailService,
    flag_file: Path,
    ses_server: SesServer,
    resend_api: ApiServer[ResendState],
) -> None:
    _write(flag_file, _share(50))
    messages: list[Any] = [_message(f"walker{n}@milequest.example") for n in range(60)]
    messages[5] = {"to": "broken", "subject": "s", "text": "t"}
    result = routed.send_bulk_emails(messages)
    assert [r.index for r in result.results] == list(range(60))
    assert (result.succeeded, result.failed) == (59, 1)
    for message, item in zip(messages, result.results, strict=True):
        if item.ok:
            assert item.provider == routed.provider_for(message).provider_name
    ses_server.state.unavailable_sends = -1
    again = routed.send_bulk_emails(messages[:10])
    assert {r.provider for r in again.results if r.ok} == {"resend"}


def test_configuration_errors_and_what_needs_no_routing(
    monkeypatch: pytest.MonkeyPatch, ses_server: SesServer
) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "ses")
    monkeypatch.setenv("EMAIL_ROUTING_PROVIDERS", "resend,carrier-pigeon")
    with pytest.raises(EmailError) as unknown:
        create_email_service()
    assert unknown.value.code is EmailErrorCode.CONFIGURATION
    monkeypatch.setenv("EMAIL_ROUTING_PROVIDERS", "resend")  # but no RESEND_API_KEY
    with pytest.raises(EmailError) as unconfigured:
        create_email_service()
    assert "RESEND_API_KEY" in unconfigured.value.message
    monkeypatch.setenv("EMAIL_ROUTING_PROVIDERS", "ses")  # only the primary: nothing to route
    assert not isinstance(create_email_service(), RoutedEmailService)
    assert not isinstance(create_email_service("ses"), RoutedEmailService)


def test_every_provider_shares_one_suppression_list_and_reports_health(
    routed: RoutedEmailService,
) -> None:
    assert all(p.suppression is routed.suppression for p in routed.providers.values())
    health = routed.health_check()
    assert health.details["providers"] == {"ses": "healthy", "resend": "healthy"}


@settings(max_examples=25)
@given(message=hostile.messages())
def test_property_routed_sends_raise_only_email_errors_and_name_their_provider(
    routed: RoutedEmailService, flag_file: Path, message: Any
) -> None:
    _write(flag_file, _share(50))
    try:
        result: SendResult | EmailError = routed.send_email(message)
    except EmailError as exc:
        result = exc
    if isinstance(result, EmailError):
        assert result.code in EmailErrorCode
        assert result.provider in ("ses", "resend", "routed")
    else:
        assert isinstance(result, SendResult)
        assert result.provider in ("ses", "resend")
