"""cfn-lint on every synthesized template of every stage, against the stage's region."""

from __future__ import annotations

import re
from pathlib import Path

from cfnlint.config import ConfigMixIn

from .conftest import Synthesized

CONFIG_FILE = Path(__file__).with_name("cfnlintrc.yaml")
_KEPT = re.compile(r"^\s*-\s*(?P<rule>[EWI]\d{4})\s*#\s*(?P<reason>.+)$")


def kept_warnings() -> dict[str, str]:
    """The warnings the config file keeps, each with its reason."""
    kept = {}
    for line in CONFIG_FILE.read_text(encoding="utf-8").splitlines():
        if match := _KEPT.match(line):
            kept[match["rule"]] = match["reason"]
    return kept


def test_kept_warnings_are_warnings_with_reasons() -> None:
    kept = kept_warnings()
    assert kept
    for rule, reason in kept.items():
        assert rule.startswith("W"), "errors are never ignored"
        assert len(reason) >= 30, rule
    # The same file drives cfn-lint itself (--config-file).
    config = ConfigMixIn(["--config-file", str(CONFIG_FILE)])
    assert sorted(config.ignore_checks) == sorted(kept)


def test_every_template_passes_cfn_lint(synthesized: Synthesized) -> None:
    """No errors, and no warning beyond those kept (each of which still occurs)."""
    result = synthesized.lint_result()
    for env in synthesized.stages:
        linted = [t for t in result["templates"] if t["stage"] == env]
        assert len(linted) == len(synthesized.stack_names(env))
    kept = set(kept_warnings())
    unexpected = [m for m in result["matches"] if m["rule"] not in kept]
    assert unexpected == []
    assert {m["rule"] for m in result["matches"]} == kept, "drop warnings that no longer occur"
