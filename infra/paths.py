"""Locations in the repository that the CDK app builds from."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNTIME_DIR = REPO_ROOT / "runtime"
RUNTIME_PACKAGE_DIR = RUNTIME_DIR / "src" / "milequest"
UV = REPO_ROOT / ".venv" / "bin" / "uv"
DOCKERFILE = "runtime/Dockerfile"
