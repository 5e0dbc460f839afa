"""Docker-free bundling of the runtime package and its locked dependencies for Lambda.

The asset is built on the synthesizing machine: ``uv export`` writes the locked requirements
of ``milequest`` with its ``lambda`` extra (the HTTP app behind Mangum, the Pusher, Resend and
SendGrid clients, the SnapStart hooks), ``uv pip install`` installs wheels for the Lambda
platform (CPython on arm64, manylinux2014) into the asset, and the ``milequest`` sources are
copied next to them. uv rather than pip because a few locked dependencies are pure-Python
sdists (``pybars3``, ``pymeta3``), which pip refuses to combine with ``--platform`` and
dependency resolution; every native file is checked afterwards to be an ELF object for the
target CPU, so a native sdist built for the host cannot slip in.

``build_bundle(..., platform=TEST_PLATFORM)`` builds the same bundle for x86_64: the tests
import it on the functions' Python version here, where no arm64 interpreter runs.

Built assets are cached by a hash of the lock file, the runtime's sources and these
settings, so repeated synths copy instead of installing.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from .paths import REPO_ROOT, RUNTIME_DIR, RUNTIME_PACKAGE_DIR, UV

# The newest Python that the test machines can run (`make test` runs the runtime suite and
# imports the bundle on it); the container image (runtime/Dockerfile) uses the same version.
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_13
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
PYTHON_VERSION = "3.13"
UV_PLATFORM = "aarch64-manylinux2014"
TEST_PLATFORM = "x86_64-manylinux2014"
RUNTIME_EXTRAS = ("lambda",)
# Bump when the layout of the bundle changes, to invalidate cached builds.
BUNDLE_FORMAT = "1"
_KEEP_CACHED = 4
_ELF_MAGIC = b"\x7fELF"
# ELF e_machine of each platform's native files.
_ELF_MACHINES = {UV_PLATFORM: 183, TEST_PLATFORM: 62}


class BundlingError(RuntimeError):
    """The Lambda asset could not be built."""


def _source_files() -> list[Path]:
    files = [RUNTIME_DIR / "pyproject.toml"]
    for path in sorted(RUNTIME_PACKAGE_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append(path)
    return files


@functools.cache
def locked_requirements() -> str:
    """The runtime's locked requirements (``uv export``), without the workspace itself."""
    export = [_uv(), "export", "--package", "milequest", "--frozen", "--no-dev"]
    for extra in RUNTIME_EXTRAS:
        export += ["--extra", extra]
    export += ["--no-hashes", "--no-emit-workspace", "--no-header", "--no-annotate", "-q"]
    with tempfile.TemporaryDirectory(prefix="mq-req-") as tmp:
        output = Path(tmp) / "requirements.txt"
        _run([*export, "-o", str(output)])
        return output.read_text(encoding="utf-8")


@functools.cache
def source_hash() -> str:
    """Hash of what the bundle is built from: locked requirements, runtime sources, settings.

    The exported requirements rather than ``uv.lock`` itself, so that a change to the
    development dependencies does not rebuild the Lambda asset.
    """
    digest = hashlib.sha256()
    settings = f"{BUNDLE_FORMAT}|{PYTHON_VERSION}|{UV_PLATFORM}|{','.join(RUNTIME_EXTRAS)}"
    digest.update(settings.encode())
    digest.update(locked_requirements().encode())
    for path in _source_files():
        digest.update(b"\0" + str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_root() -> Path:
    """Where built bundles are kept between synths (``MILEQUEST_BUNDLE_CACHE`` overrides)."""
    explicit = os.environ.get("MILEQUEST_BUNDLE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "milequest" / "lambda-bundles"


def _uv() -> str:
    if UV.exists():
        return str(UV)
    found = shutil.which("uv")
    if found is None:
        raise BundlingError("uv not found: run `make setup` first")
    return found


def _run(args: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONH"))}
    env.pop("FORCE_COLOR", None)  # the CDK CLI sets it; keep uv's output plain
    env.update(UV_NO_PROGRESS="1", NO_COLOR="1")
    proc = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BundlingError(f"{' '.join(args[:3])} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _check_native_files(root: Path, platform: str = UV_PLATFORM) -> None:
    """Every ELF object in the bundle must be built for ``platform``'s CPU (AArch64 for Lambda)."""
    machine = _ELF_MACHINES[platform]
    wrong = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as handle:
            header = handle.read(20)
        if header[:4] == _ELF_MAGIC and int.from_bytes(header[18:20], "little") != machine:
            wrong.append(str(path.relative_to(root)))
    if wrong:
        cpu = platform.partition("-")[0]
        raise BundlingError(f"native files not built for {cpu}: " + ", ".join(sorted(wrong)))


def build_bundle(target: Path, platform: str = UV_PLATFORM) -> None:
    """Install the runtime and its locked dependencies for ``platform`` into ``target``.

    The default is the functions' platform (Lambda arm64); ``TEST_PLATFORM`` gives the same
    files with x86_64 native objects.
    """
    if platform not in _ELF_MACHINES:
        raise BundlingError(f"unknown platform {platform!r}: one of {', '.join(_ELF_MACHINES)}")
    with tempfile.TemporaryDirectory(prefix="mq-req-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(locked_requirements(), encoding="utf-8")
        _run(
            [
                _uv(),
                "pip",
                "install",
                "--no-deps",
                "--no-config",
                "--target",
                str(target),
                "--python-platform",
                platform,
                "--python-version",
                PYTHON_VERSION,
                "-r",
                str(requirements),
            ]
        )
    # Console scripts carry the build host's interpreter path; the functions never run them.
    shutil.rmtree(target / "bin", ignore_errors=True)
    shutil.copytree(
        RUNTIME_PACKAGE_DIR,
        target / "milequest",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    _check_native_files(target, platform)


def cached_bundle(key: str) -> Path:
    """The bundle for ``key`` from the cache, building (atomically) when missing."""
    root = cache_root()
    final = root / key
    if (final / ".complete").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    try:
        build_bundle(work / "bundle")
        (work / "bundle" / ".complete").touch()
        try:
            (work / "bundle").rename(final)
        except OSError:
            # Another synth finished the same bundle first.
            if not (final / ".complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(root, keep=final)
    return final


def _prune(root: Path, keep: Path) -> None:
    entries = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[_KEEP_CACHED - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


@jsii.implements(ILocalBundling)
class LocalRuntimeBundler:
    """``ILocalBundling`` that fills the asset from the cached bundle (no Docker)."""

    def __init__(self, key: str) -> None:
        self._key = key

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        bundle = cached_bundle(self._key)
        shutil.copytree(
            bundle, output_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete")
        )
        return True


def runtime_code() -> lambda_.Code:
    """The Lambda code asset: the runtime package plus its locked dependencies."""
    key = source_hash()
    return lambda_.Code.from_asset(
        str(RUNTIME_DIR),
        asset_hash=key,
        asset_hash_type=AssetHashType.CUSTOM,
        bundling=BundlingOptions(
            # Never pulled: the local bundler always succeeds or raises.
            image=DockerImage.from_registry("unused"),
            # jsii calls try_bundle with the options struct positionally, not as keywords.
            local=LocalRuntimeBundler(key),  # type: ignore[arg-type]
        ),
    )
