"""Synthesize each environment once per session; tests read the resulting templates."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from milequest.services.email.settings import EmailSettings
from milequest.services.flags import FlagSettings
from milequest.services.routing import RoutingSettings
from milequest.services.websocket.settings import WebSocketSettings
from milequest.web.settings import WebSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
# jsii runs on the Node the project pins (no end-of-life warning), also outside make.
os.environ.setdefault("JSII_NODE", str(REPO_ROOT / "node_modules" / ".bin" / "node"))
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import App, Stack, Stage  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from infra.config import EnvironmentConfig  # noqa: E402
from infra.nag import FAIL_ON_FINDINGS  # noqa: E402
from infra.stage import MileQuestStage, build_app  # noqa: E402

SKIP_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}

# Every variable the runtime reads: its settings (upper-cased field names), Powertools, metrics.
RUNTIME_VARS = {
    *(
        name.upper()
        for name in (
            *EmailSettings.model_fields,
            *WebSocketSettings.model_fields,
            *WebSettings.model_fields,
            *FlagSettings.model_fields,
            *RoutingSettings.model_fields,
        )
    ),
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "METRICS_SINK",
}


def cdk_context(**extra: Any) -> dict[str, Any]:
    """cdk.json's context (the feature flags the CLI passes) plus ``extra``."""
    flags: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    return {**flags, **extra}


def new_app(outdir: Path, *, bundling: bool = False) -> App:
    """An App configured as under the CLI: cdk.json flags, nag findings fail synth."""
    context = cdk_context() if bundling else cdk_context(**SKIP_BUNDLING)
    return App(context=context, outdir=str(outdir), post_cli_context=FAIL_ON_FINDINGS)


# What the CDK CLI would take from the caller's credentials: a region other than the stages'
# own, so that tests see the pinned placement win.
CLI_REGION = "us-west-2"


@dataclass
class Synthesized:
    """One synthesized app: its stages, cloud assembly directory and validation report."""

    app: App
    stages: dict[str, MileQuestStage]
    outdir: Path
    linting: subprocess.Popen[str] | None = None
    _lint_result: dict[str, Any] | None = None

    def start_linting(self) -> None:
        """cfn-lint every template in a process of its own (see cfn_lint_run)."""
        regions = {name: stage.config.region for name, stage in self.stages.items()}
        self.linting = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.infra.cfn_lint_run",
                str(self.outdir),
                json.dumps(regions),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )

    def lint_result(self) -> dict[str, Any]:
        if self._lint_result is None:
            if self.linting is None:
                self.start_linting()
            assert self.linting is not None
            output, _ = self.linting.communicate(timeout=600)
            assert self.linting.returncode == 0
            self._lint_result = json.loads(output)
        return self._lint_result

    def template(self, env: str, stack: str) -> Template:
        return Template.from_json(self.template_json(env, stack))

    def template_json(self, env: str, stack: str) -> dict[str, Any]:
        return template_json(self.stages[env], stack)

    def stack_names(self, env: str) -> list[str]:
        return [child.node.id for child in self.stages[env].node.children if Stack.is_stack(child)]

    def validation_report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.outdir / "validation-report.json").read_text())
        return data


def template_json(stage: Stage, stack_id: str) -> dict[str, Any]:
    """The synthesized template of ``stage``'s stack ``stack_id`` (no re-synthesis), a fresh
    copy each time. Read from the assembly directory: through jsii the same dictionary costs
    tens of milliseconds per call, and the suite reads each template over and over."""
    stack = stage.node.find_child(stack_id)
    assert isinstance(stack, Stack)
    template: dict[str, Any] = json.loads(_text(str(Path(stage.outdir) / stack.template_file)))
    return template


@functools.cache
def _text(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def synth_env() -> Iterator[None]:
    """The CLI's view of the environment while the app is built."""
    saved = {k: os.environ.get(k) for k in ("CDK_DEFAULT_REGION", "CDK_DEFAULT_ACCOUNT")}
    os.environ["CDK_DEFAULT_REGION"] = CLI_REGION
    os.environ.pop("CDK_DEFAULT_ACCOUNT", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def synthesized(synth_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    """The whole app (every environment, cdk-nag included), synthesized once; cfn-lint starts
    on its templates in the background."""
    outdir = tmp_path_factory.mktemp("cdk-out")
    app = new_app(outdir)
    stages: dict[str, MileQuestStage] = {stage.config.name: stage for stage in build_app(app)}
    app.synth()
    result = Synthesized(app=app, stages=stages, outdir=outdir)
    result.start_linting()
    yield result
    if result.linting is not None and result.linting.poll() is None:
        result.linting.kill()
        result.linting.wait()


def synth_variant(config: EnvironmentConfig, outdir: Path) -> Synthesized:
    """A one-environment app for a config variant, cdk-nag included."""
    app = new_app(outdir)
    stages: dict[str, MileQuestStage] = {s.config.name: s for s in build_app(app, [config])}
    app.synth()
    return Synthesized(app=app, stages=stages, outdir=outdir)


def resources(template: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    """The resources of one CloudFormation type, by logical id."""
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == type_name
    }


def only(template: dict[str, Any], type_name: str) -> dict[str, Any]:
    """The properties of the single resource of ``type_name``."""
    found = resources(template, type_name)
    assert len(found) == 1, f"expected one {type_name}, found {sorted(found)}"
    properties: dict[str, Any] = next(iter(found.values())).get("Properties", {})
    return properties


def variant(name: str, **overrides: Any) -> EnvironmentConfig:
    """A shipped environment with ``overrides`` applied (validated like the real ones)."""
    from infra.config import ENVIRONMENTS

    return EnvironmentConfig.model_validate(ENVIRONMENTS[name].model_dump() | overrides)


def realtime_config_options(
    variables: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any] | None:
    """What the HTTP app's ``GET /realtime/config`` answers for an API Gateway user when the
    process runs with the synthesized ``variables`` (None: it answers 503, no host)."""
    from milequest.services.websocket.mock import MockWebSocketService
    from milequest.web.client_config import client_config
    from milequest.web.settings import WebSettings

    for name in ("REALTIME_WS_HOST", "REALTIME_WS_PORT", "REALTIME_WS_TLS"):
        if name in variables:
            monkeypatch.setenv(name, variables[name])
        else:
            monkeypatch.delenv(name, raising=False)
    config = client_config(MockWebSocketService(), "user-1", "https://api", WebSettings())
    return None if config is None else dict(config["options"])


CERTIFICATE_ARN = (
    "arn:aws:acm:eu-west-1:111111111111:certificate/0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
)


@pytest.fixture(scope="session")
def _variants(synth_env: None, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The two config variants below, synthesized (cdk-nag included) as one app: one
    synthesis instead of two."""
    bare_dev = variant("dev", hosted_zone=None, custom_domain=None, websocket_token_authorizer=True)
    certified_staging = variant(
        "staging",
        hosted_zone=None,
        custom_domain={
            "websocket_host": "ws.staging.milequest.app",
            "api_host": "api.staging.milequest.app",
            "certificate_arn": CERTIFICATE_ARN,
        },
        container={"enabled": True, "desired_count": 1},
        manage_apigateway_account_role=False,
        reserved_concurrency=5,
        websocket_webhook_url="https://hooks.milequest.app/pusher",
        migration={
            "email_secondary_provider": "resend",
            "websocket_secondary_provider": "pusher",
            "error_rate_margin": 0.05,
        },
    )
    outdir = tmp_path_factory.mktemp("cdk-out-variants")
    app = new_app(outdir)
    both = build_app(app, [bare_dev, certified_staging])
    stages: dict[str, MileQuestStage] = {stage.config.name: stage for stage in both}
    app.synth()
    return Synthesized(app=app, stages=stages, outdir=outdir)


@pytest.fixture(scope="session")
def bare(_variants: Synthesized) -> Synthesized:
    """dev without a hosted zone or custom domain, with the opt-in token authorizer."""
    return Synthesized(
        app=_variants.app, stages={"dev": _variants.stages["dev"]}, outdir=_variants.outdir
    )


@pytest.fixture(scope="session")
def certified(_variants: Synthesized) -> Synthesized:
    """staging on the container target with an imported certificate and no hosted zone,
    a webhook URL, reserved concurrency, the account role left to another stack, and a
    migration of both services in progress."""
    return Synthesized(
        app=_variants.app, stages={"staging": _variants.stages["staging"]}, outdir=_variants.outdir
    )
