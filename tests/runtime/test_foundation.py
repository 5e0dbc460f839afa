"""The service foundation: errors, the base class, metrics sinks, config, secrets, registry."""

from __future__ import annotations

import json
import pickle
from enum import StrEnum
from typing import Any, ClassVar

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError
from milequest.services import (
    BaseService,
    EmfSink,
    HealthState,
    InMemorySink,
    NoopSink,
    ServiceError,
    check_services_health,
    get_service,
    initialize_services,
    override_service,
    register_service,
    reset_services,
    set_default_sink,
)
from milequest.services.config import (
    ServiceSettings,
    clear_secret_cache,
    get_secret,
    get_secret_json,
    load_settings,
)
from milequest.services.errors import COMMON_HINTS, CommonErrorCode
from milequest.services.metrics import default_sink
from moto import mock_aws
from pydantic import AliasChoices, Field


class DemoCode(StrEnum):
    CONFIGURATION = "CONFIGURATION"
    RATE_LIMITED = "RATE_LIMITED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    BROKEN = "BROKEN"


class DemoError(ServiceError):
    hints: ClassVar[dict[str, str]] = {**COMMON_HINTS, "BROKEN": "Fix the demo."}


class DemoService(BaseService):
    service_name = "demo"
    provider_name = "local"
    error_type = DemoError
    error_codes = DemoCode

    def __init__(self, state: HealthState = HealthState.HEALTHY, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state

    def call(self, fn: Any) -> Any:
        return self._run("call", fn)

    def _translate_error(self, exc: Exception) -> ServiceError | None:
        if isinstance(exc, LookupError):
            return self._error("BROKEN", str(exc))
        return None

    def _probe(self) -> tuple[HealthState, dict[str, Any]]:
        if self.state is HealthState.UNHEALTHY:
            raise ConnectionRefusedError("down")
        return self.state, {"probe": "ok"}


class NoUnauthorizedCode(StrEnum):
    CONFIGURATION = "CONFIGURATION"
    RATE_LIMITED = "RATE_LIMITED"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    PROVIDER_ERROR = "PROVIDER_ERROR"


class PlainService(DemoService):
    error_codes = NoUnauthorizedCode  # type: ignore[assignment]


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "Op",
    )


def _raiser(exc: BaseException) -> Any:
    def fn() -> None:
        raise exc

    return fn


# -- errors -----------------------------------------------------------------------------------


def test_error_str_names_the_code_and_what_to_do() -> None:
    err = DemoError(DemoCode.BROKEN, "it broke", provider="local", retryable=True)
    assert str(err) == "BROKEN: it broke (provider: local). Fix the demo. Retrying may succeed."
    assert err.hint == "Fix the demo."
    plain = DemoError(DemoCode.CONFIGURATION, "bad")
    assert str(plain) == f"CONFIGURATION: bad. {COMMON_HINTS['CONFIGURATION']}"
    assert "code='BROKEN'" in repr(err)


def test_errors_survive_pickling() -> None:
    err = DemoError(DemoCode.RATE_LIMITED, "slow", provider="p", retryable=True)
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), copy.code, copy.message, copy.provider, copy.retryable) == (
        DemoError,
        DemoCode.RATE_LIMITED,
        "slow",
        "p",
        True,
    )


def test_common_codes_have_hints() -> None:
    assert set(COMMON_HINTS) == {c.value for c in CommonErrorCode}


# -- the base class ---------------------------------------------------------------------------


def test_run_counts_and_times_every_call() -> None:
    sink = InMemorySink()
    service = DemoService(metrics=sink)
    assert service.call(lambda: 42) == 42
    with pytest.raises(DemoError):
        service.call(_raiser(ValueError("x")))
    assert sink.total("Calls", Service="demo", Provider="local", Operation="call") == 2
    assert sink.values("Errors", Operation="call") == [0, 1]
    assert len(sink.values("Latency", Operation="call")) == 2
    service.record_metric("Custom", 3, "Bytes", Extra="yes")
    assert sink.total("Custom", Extra="yes") == 3


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [
        (_client_error("ThrottlingException", 400), "RATE_LIMITED", True),
        (_client_error("Whatever", 429), "RATE_LIMITED", True),
        (_client_error("AccessDeniedException", 403), "UNAUTHORIZED", False),
        (_client_error("InternalFailure", 500), "PROVIDER_UNAVAILABLE", True),
        (_client_error("ValidationException", 400), "PROVIDER_ERROR", False),
        (NoRegionError(), "CONFIGURATION", False),
        (EndpointConnectionError(endpoint_url="http://x"), "PROVIDER_UNAVAILABLE", True),
        (ConnectionResetError("reset"), "PROVIDER_UNAVAILABLE", True),
        (TypeError("bug"), "PROVIDER_ERROR", False),
        (KeyError("gone"), "BROKEN", False),
    ],
)
def test_exceptions_map_to_the_service_error(exc: Exception, code: str, retryable: bool) -> None:
    with pytest.raises(DemoError) as info:
        DemoService(metrics=NoopSink()).call(_raiser(exc))
    assert info.value.code is DemoCode[code]
    assert info.value.retryable is retryable
    assert info.value.provider == "local"
    assert info.value.__cause__ is exc


def test_auth_errors_fall_back_to_configuration() -> None:
    with pytest.raises(DemoError) as info:
        PlainService(metrics=NoopSink()).call(_raiser(_client_error("AccessDenied", 403)))
    assert info.value.code.value == "CONFIGURATION"


def test_service_errors_pass_through_unchanged() -> None:
    original = DemoError(DemoCode.BROKEN, "as is")
    with pytest.raises(DemoError) as info:
        DemoService(metrics=NoopSink()).call(_raiser(original))
    assert info.value is original


def test_a_failing_sink_never_fails_the_operation() -> None:
    class Exploding:
        def put(self, *args: Any) -> None:
            raise RuntimeError("sink down")

    assert DemoService(metrics=Exploding()).call(lambda: "fine") == "fine"


@pytest.mark.parametrize("state", list(HealthState))
def test_health_check(state: HealthState) -> None:
    sink = InMemorySink()
    status = DemoService(state, metrics=sink).health_check()
    assert status.status is state
    assert (status.service, status.provider) == ("demo", "local")
    assert status.latency_ms >= 0
    if state is HealthState.UNHEALTHY:
        assert "PROVIDER_UNAVAILABLE" in status.details["error"]
    else:
        assert status.details == {"probe": "ok"}
    assert sink.values("Healthy") == [1 if state is HealthState.HEALTHY else 0]


# -- metrics sinks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"METRICS_SINK": "memory"}, InMemorySink),
        ({"METRICS_SINK": "none"}, NoopSink),
        ({"METRICS_SINK": "emf"}, EmfSink),
        ({"METRICS_SINK": "", "AWS_LAMBDA_FUNCTION_NAME": "fn"}, EmfSink),
        ({"METRICS_SINK": ""}, NoopSink),
    ],
)
def test_default_sink_from_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: type
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    set_default_sink(None)
    assert isinstance(default_sink(), expected)
    mine = InMemorySink()
    set_default_sink(mine)
    assert default_sink() is mine


def test_emf_sink_writes_embedded_metric_format(capsys: pytest.CaptureFixture[str]) -> None:
    EmfSink("MileQuestTest").put("Sent", 2, "Count", {"Service": "email", "Provider": "ses"})
    line = [x for x in capsys.readouterr().out.splitlines() if x.strip()][-1]
    blob = json.loads(line)
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "MileQuestTest"
    assert directive["Metrics"] == [{"Name": "Sent", "Unit": "Count"}]
    assert set(directive["Dimensions"][0]) >= {"Service", "Provider"}
    assert blob["Sent"] == [2.0] or blob["Sent"] == 2.0
    assert blob["Provider"] == "ses"


# -- configuration and secrets ---------------------------------------------------------------


class DemoSettings(ServiceSettings):
    demo_port: int = 80
    demo_key: str = Field("k", validation_alias=AliasChoices("DEMO_KEY", "LEGACY_KEY"))


def test_settings_are_read_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "8080")
    assert load_settings(DemoSettings, DemoError, DemoCode.CONFIGURATION).demo_port == 8080
    monkeypatch.setenv("DEMO_PORT", "9090")
    loaded = load_settings(DemoSettings, DemoError, DemoCode.CONFIGURATION, {"demo_key": "o"})
    assert (loaded.demo_port, loaded.demo_key) == (9090, "o")


def test_settings_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "eighty")
    with pytest.raises(DemoError) as info:
        load_settings(DemoSettings, DemoError, DemoCode.CONFIGURATION)
    assert info.value.code is DemoCode.CONFIGURATION
    assert "DEMO_PORT" in info.value.message
    assert "'eighty'" in info.value.message
    monkeypatch.delenv("DEMO_PORT")
    with pytest.raises(DemoError) as info:
        load_settings(DemoSettings, DemoError, DemoCode.CONFIGURATION, {"demo_key": 5})
    assert "DEMO_KEY" in info.value.message
    with pytest.raises(DemoError) as info:
        load_settings(DemoSettings, DemoError, DemoCode.CONFIGURATION, {"colour": "red"})
    assert "colour" in info.value.message
    assert "demo_port" in info.value.message


def test_secrets_are_fetched_once_and_cached() -> None:
    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="demo", SecretString=json.dumps({"key": "v1"}))["ARN"]
        assert get_secret_json(arn) == {"key": "v1"}
        client.put_secret_value(SecretId=arn, SecretString=json.dumps({"key": "v2"}))
        assert get_secret_json(arn) == {"key": "v1"}  # cached
        clear_secret_cache()
        assert get_secret_json(arn) == {"key": "v2"}
        text = client.create_secret(Name="plain", SecretString="[1, 2]")["ARN"]
        assert get_secret(text) == "[1, 2]"
        with pytest.raises(ValueError, match="not a JSON object"):
            get_secret_json(text)


# -- registry --------------------------------------------------------------------------------


def test_register_override_and_reset() -> None:
    first, second = DemoService(), DemoService()
    register_service("demo", first)
    assert get_service("demo") is first
    with override_service("demo", second):
        assert get_service("demo") is second
    assert get_service("demo") is first
    with override_service("fresh", second):
        assert get_service("fresh") is second
    with pytest.raises(KeyError):
        get_service("fresh")
    reset_services()
    with pytest.raises(KeyError, match="unknown service"):
        get_service("demo")


def test_health_report_aggregates_the_worst_state() -> None:
    register_service("a", DemoService(HealthState.HEALTHY))
    register_service("b", DemoService(HealthState.DEGRADED))
    report = check_services_health()
    assert report.status is HealthState.DEGRADED
    assert set(report.services) == {"a", "b"}
    register_service("c", DemoService(HealthState.UNHEALTHY))
    assert check_services_health().status is HealthState.UNHEALTHY
    assert check_services_health(["a"]).status is HealthState.HEALTHY
    assert check_services_health([]).status is HealthState.HEALTHY


def test_initialize_creates_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "mock")
    services = initialize_services(["email"])
    assert services["email"].provider_name == "mock"
    assert get_service("email") is services["email"]
    assert initialize_services([]) == {}
