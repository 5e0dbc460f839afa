"""Docker-free Lambda bundling: wheels for arm64 Lambda, the runtime package, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import Stack

from infra import bundling
from infra.config import ENVIRONMENTS
from infra.lambdas import RuntimeFunction

from .conftest import new_app

_ELF_HEADER = b"\x7fELF\x02\x01\x01" + b"\0" * 11


def _elf(machine: int) -> bytes:
    return _ELF_HEADER + machine.to_bytes(2, "little") + b"\0" * 44


def test_native_files_must_be_aarch64(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "ok.so").write_bytes(_elf(183))
    (tmp_path / "pkg" / "module.py").write_text("x = 1\n")
    bundling._check_native_files(tmp_path)
    (tmp_path / "pkg" / "host.so").write_bytes(_elf(62))  # x86-64
    with pytest.raises(bundling.BundlingError, match=r"for aarch64: pkg/host\.so"):
        bundling._check_native_files(tmp_path)
    # The x86_64 twin that the tests import is held to its own CPU the same way.
    with pytest.raises(bundling.BundlingError, match=r"for x86_64: pkg/ok\.so"):
        bundling._check_native_files(tmp_path, bundling.TEST_PLATFORM)


def test_runtime_and_python_version_agree() -> None:
    # The Makefile reads PYTHON_VERSION to find the interpreter the runtime suite runs on.
    assert bundling.LAMBDA_RUNTIME.name == f"python{bundling.PYTHON_VERSION}"


def test_unknown_platform_is_refused_before_installing(tmp_path: Path) -> None:
    with pytest.raises(bundling.BundlingError, match="unknown platform 'win_amd64'"):
        bundling.build_bundle(tmp_path / "bundle", "win_amd64")
    assert not (tmp_path / "bundle").exists()


def test_source_hash_covers_locked_requirements_and_runtime_sources() -> None:
    requirements = bundling.locked_requirements().splitlines()
    # The runtime's `lambda` extra: the HTTP app behind Mangum, every provider client and the
    # SnapStart hooks.
    for name in (
        "pydantic-core",
        "pusher",
        "sendgrid",
        "svix",
        "cryptography",
        "starlette",
        "mangum",
    ):
        assert any(line.startswith(f"{name}==") for line in requirements), name
    assert any(line.startswith("snapshot-restore-py==") for line in requirements)
    unwanted = ("pytest", "moto", "aws-cdk-lib", "matplotlib", "hypothesis")
    assert not any(line.startswith(unwanted) for line in requirements)
    files = {str(p.relative_to(bundling.REPO_ROOT)) for p in bundling._source_files()}
    assert "runtime/src/milequest/services/email/templates.py" in files
    assert "runtime/src/milequest/templates/welcome/subject.hbs" in files
    assert not any("__pycache__" in f for f in files)
    assert len(bundling.source_hash()) == 64


def test_cached_bundle_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILEQUEST_BUNDLE_CACHE", str(tmp_path))
    builds: list[Path] = []

    def fake_build(target: Path) -> None:
        builds.append(target)
        (target / "milequest").mkdir(parents=True)

    monkeypatch.setattr(bundling, "build_bundle", fake_build)
    first = bundling.cached_bundle("k1")
    second = bundling.cached_bundle("k1")
    assert first == second == tmp_path / "k1"
    assert len(builds) == 1
    assert (first / ".complete").exists()
    for key in ("k2", "k3", "k4", "k5"):
        bundling.cached_bundle(key)
    kept = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(kept) == 4
    assert "k5" in kept


def test_failed_build_leaves_no_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILEQUEST_BUNDLE_CACHE", str(tmp_path))

    def broken(target: Path) -> None:
        target.mkdir(parents=True)
        raise bundling.BundlingError("no wheels")

    monkeypatch.setattr(bundling, "build_bundle", broken)
    with pytest.raises(bundling.BundlingError):
        bundling.cached_bundle("k1")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_real_bundle_holds_runtime_and_arm64_wheels(
    synth_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bundles for real (wheels from PyPI) through the CDK asset pipeline, no Docker."""
    monkeypatch.setenv("MILEQUEST_BUNDLE_CACHE", str(tmp_path / "cache"))
    app = new_app(tmp_path / "out", bundling=True)
    stack = Stack(app, "Bundled")
    RuntimeFunction(
        stack,
        "Probe",
        config=ENVIRONMENTS["dev"],
        handler="milequest.handlers.ses_events.handler",
        service="probe",
        description="bundling probe",
    )
    app.synth()
    manifest = json.loads((tmp_path / "out" / "Bundled.assets.json").read_text())
    (asset,) = [f for f in manifest["files"].values() if f["source"]["packaging"] == "zip"]
    root = tmp_path / "out" / asset["source"]["path"]

    assert (root / "milequest" / "__init__.py").is_file()
    assert (root / "milequest" / "templates" / "welcome" / "subject.hbs").is_file()
    assert (root / "pydantic" / "__init__.py").is_file()
    assert (root / "aws_lambda_powertools").is_dir()
    assert (root / "pybars").is_dir()  # a pure-Python sdist in the lock
    (core,) = (root / "pydantic_core").glob("_pydantic_core.*.so")
    assert core.name.endswith("-aarch64-linux-gnu.so")
    assert f"cpython-{bundling.PYTHON_VERSION.replace('.', '')}" in core.name
    assert core.read_bytes()[18:20] == (183).to_bytes(2, "little")
    assert not (root / "bin").exists()
    assert not list(root.rglob("__pycache__"))
    wheel_tags = (next(root.glob("pydantic_core-*.dist-info")) / "WHEEL").read_text()
    assert "manylinux2014_aarch64" in wheel_tags or "manylinux_2_17_aarch64" in wheel_tags
