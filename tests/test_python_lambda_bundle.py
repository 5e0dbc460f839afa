"""The Lambda bundle, imported and invoked on the functions' Python with nothing else on sys.path.

The functions run arm64; no arm64 interpreter runs here. So the test builds the bundle twice
from the same lock with the same code (``infra.bundling.build_bundle``, which synth uses):
for the functions' platform and for x86_64. It checks that the two differ only in native
objects and wheel metadata, then runs the x86_64 twin with ``python3.X -I -S``, so that only
the bundle and the standard library can be imported, and calls every handler once
(``tests/lambda_runtime/probe.py``). An import-graph check of the arm64 bundle alone would
miss what only running finds: a module-level call that fails on this Python, a missing
transitive dependency loaded lazily, a handler that breaks on its first event.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from infra.bundling import PYTHON_VERSION, TEST_PLATFORM, UV_PLATFORM, build_bundle

from .lambda_runtime.harness import (
    LoopbackApis,
    check_cold_start,
    lambda_environment,
    run_probe,
)
from .lambda_runtime.interpreter import find_python, where_looked

pytestmark = pytest.mark.slow

_ARCH = re.compile(r"x86_64|aarch64")


@pytest.fixture(scope="module")
def lambda_python() -> Path:
    found = find_python(PYTHON_VERSION)
    if found is None:
        pytest.skip(
            f"the bundle was not imported on the Lambda's Python: {where_looked(PYTHON_VERSION)}"
        )
    return found


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    built = {}
    for platform in (UV_PLATFORM, TEST_PLATFORM):
        built[platform] = root / platform
        build_bundle(built[platform], platform)
    return built


def _digests(root: Path) -> dict[str, str]:
    """File digests by path, with the CPU name in paths made neutral."""
    return {
        _ARCH.sub("ARCH", str(path.relative_to(root))): hashlib.sha256(
            path.read_bytes()
        ).hexdigest()
        for path in root.rglob("*")
        if path.is_file()
    }


def test_twin_differs_from_the_lambda_bundle_only_in_native_code(bundles: dict[str, Path]) -> None:
    lambda_files = _digests(bundles[UV_PLATFORM])
    twin_files = _digests(bundles[TEST_PLATFORM])
    assert lambda_files.keys() == twin_files.keys()
    differing = {name for name in lambda_files if lambda_files[name] != twin_files[name]}
    assert differing, "the twin should hold x86_64 native objects"
    for name in differing:
        twin = bundles[TEST_PLATFORM] / name.replace("ARCH", "x86_64")
        assert twin.read_bytes()[:4] == b"\x7fELF" or ".dist-info/" in name, name
    assert any(name.startswith("pydantic_core/") for name in differing)


def test_bundle_imports_and_serves_on_the_lambda_python(
    bundles: dict[str, Path], lambda_python: Path, tmp_path: Path
) -> None:
    bundle = bundles[TEST_PLATFORM]
    apis = LoopbackApis()
    with lambda_environment(tmp_path, apis) as env:
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_python{PYTHON_VERSION}"
        run = run_probe([str(lambda_python), "-I", "-S"], env, tmp_path, bundle=bundle)
    assert run.report["python"].startswith(PYTHON_VERSION + ".")
    assert run.report["sys_path"][0] == str(bundle)
    assert not any("site-packages" in entry for entry in run.report["sys_path"])
    assert run.report["foreign_modules"] == []
    assert len(run.report["imported"]) > 40
    check_cold_start(run, apis)
