"""Every Lambda entry point on a cold start, in a new process of this interpreter.

``make test`` runs this directory and ``tests/runtime`` a second time in ``.venv-lambda``, on
the functions' Python version; ``tests/test_python_lambda_bundle.py`` runs the same probe
inside the built bundle.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .harness import LoopbackApis, check_cold_start, lambda_environment, run_probe


def test_handlers_cold_start_in_a_fresh_process(tmp_path: Path) -> None:
    apis = LoopbackApis()
    with lambda_environment(tmp_path, apis) as env:
        run = run_probe([sys.executable], env, tmp_path)
    assert run.report["python"].startswith("{}.{}.".format(*sys.version_info[:2]))
    check_cold_start(run, apis)


def test_checks_catch_a_failing_handler(tmp_path: Path) -> None:
    """Without its table, $connect answers 500, stores nothing and the checks say so."""
    apis = LoopbackApis()
    with lambda_environment(tmp_path, apis) as env:
        env["CONNECTIONS_TABLE"] = "no-such-table"
        run = run_probe([sys.executable], env, tmp_path)
    assert run.invocations["connect"]["result"] == {"statusCode": 500, "body": "connect failed"}
    assert "ResourceNotFoundException" in run.report["stored_after_connect"]
    assert apis.invocations == []
    with pytest.raises(AssertionError):
        check_cold_start(run, apis)
