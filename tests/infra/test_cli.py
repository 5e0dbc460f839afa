"""`cdk synth` through the pinned CLI: Node 22 for jsii, and findings fail the command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

PROBE_APP = """
import sys
sys.path.insert(0, {root!r})
from aws_cdk import App, Stack, Stage
from aws_cdk import aws_sns as sns
from infra.nag import FAIL_ON_FINDINGS, add_checks
app = App(post_cli_context=FAIL_ON_FINDINGS)
sns.Topic(Stack(Stage(app, "dev"), "Probe"), "Plain")
add_checks(app)
app.synth()
"""


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
def test_cli_synthesizes_every_environment(tmp_path: Path) -> None:
    proc = _cdk(outdir=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # jsii runs on the pinned Node 22: no end-of-life banner.
    assert "end-of-life" not in output
    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert report["pluginReports"][0]["conclusion"] == "success"
    assert sorted(p.name for p in tmp_path.glob("assembly-*")) == [
        "assembly-dev",
        "assembly-prod",
        "assembly-staging",
    ]


@pytest.mark.slow
def test_cli_synth_fails_on_a_finding(tmp_path: Path) -> None:
    probe = tmp_path / "probe_app.py"
    probe.write_text(PROBE_APP.format(root=str(REPO_ROOT)))
    python = REPO_ROOT / ".venv" / "bin" / "python"
    proc = _cdk("--app", f"{python} {probe}", outdir=tmp_path / "out")
    assert proc.returncode != 0
    assert "AwsSolutions-SNS3" in proc.stdout + proc.stderr
