"""`cdk synth` through the pinned CLI: Node 22 for jsii, the whole app bundled and nag-clean,
and a finding fails the command.

One CLI run proves all three (each run costs a minute: the CLI, jsii and every stage's
synthesis with the real Lambda bundle): the app in ``app.py``, plus a probe stage with one
unacknowledged finding.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from infra.nag import unacknowledged_findings

from .conftest import REPO_ROOT

# app.py exactly as `make synth` runs it, with a stage holding one finding added to the app.
PROBE_APP = """
import runpy
import sys

sys.path.insert(0, {root!r})
from aws_cdk import Stack, Stage
from aws_cdk import aws_sns as sns

import infra.stage

build_app = infra.stage.build_app


def build_app_with_probe(app, configs=None):
    stages = build_app(app, configs)
    sns.Topic(Stack(Stage(app, "probe"), "Probe"), "Plain")  # AwsSolutions-SNS3
    return stages


infra.stage.build_app = build_app_with_probe
runpy.run_path({app!r}, run_name="__main__")
"""
STACKS = {"Flags", "Email", "Realtime", "Observability"}


def _cdk(*args: str, outdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDK_")}
    env["JSII_NODE"] = str(REPO_ROOT / "node_modules" / ".bin" / "node")
    env.pop("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", None)
    cdk = str(REPO_ROOT / "node_modules" / ".bin" / "cdk")
    return subprocess.run(
        [cdk, "synth", "--quiet", "-o", str(outdir), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_cli_synthesizes_every_environment_and_fails_on_a_finding(tmp_path: Path) -> None:
    probe = tmp_path / "probe_app.py"
    probe.write_text(PROBE_APP.format(root=str(REPO_ROOT), app=str(REPO_ROOT / "app.py")))
    python = REPO_ROOT / ".venv" / "bin" / "python"
    outdir = tmp_path / "out"
    proc = _cdk("--app", f"{python} {probe}", outdir=outdir)
    output = proc.stdout + proc.stderr
    # jsii runs on the pinned Node 22: no end-of-life banner.
    assert "end-of-life" not in output
    # The finding fails the command (the CLI alone would exit 0) ...
    assert proc.returncode != 0, output
    assert "AwsSolutions-SNS3" in output
    # ... and it is the only one: every stage of app.py is clean through the CLI too.
    assert unacknowledged_findings(outdir) == ["AwsSolutions-SNS3 at probe/Probe/Plain/Resource"]
    report = json.loads((outdir / "validation-report.json").read_text())
    conclusions = {p["pluginName"]: p["conclusion"] for p in report["pluginReports"]}
    assert conclusions == {"AwsSolutions": "failure", "CloudFormation Validate": "success"}
    assert sorted(p.name for p in outdir.glob("assembly-*")) == [
        "assembly-dev",
        "assembly-probe",
        "assembly-prod",
        "assembly-staging",
    ]
    bundles = set()
    for env, app_stack in (("dev", "Web"), ("staging", "Web"), ("prod", "Container")):
        assembly = outdir / f"assembly-{env}"
        # Artifact ids: <stage><stack><8 hex digits>.
        stacks = {
            re.fullmatch(rf"{env}([A-Za-z]+)[0-9A-F]{{8}}\.template\.json", p.name)
            for p in assembly.glob("*.template.json")
        }
        assert {match[1] for match in stacks if match} == STACKS | {app_stack}
        assert None not in stacks
        realtime = next(assembly.glob(f"{env}Realtime*.assets.json"))
        files = json.loads(realtime.read_text())["files"].values()
        bundles |= {
            f["source"]["path"]
            for f in files
            if f["source"].get("packaging") == "zip"
            and (assembly / f["source"]["path"] / "milequest" / "__init__.py").is_file()
        }
    # Each stage bundled the runtime for Lambda (the same bundle: one asset hash).
    (bundle,) = bundles
    (core,) = (outdir / "assembly-dev" / bundle / "pydantic_core").glob("_pydantic_core.*.so")
    assert core.name.endswith("-aarch64-linux-gnu.so")
