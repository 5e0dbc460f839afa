"""Lints the templates of a cloud assembly with cfn-lint, in a process of its own.

``python -m tests.infra.cfn_lint_run <outdir> '{"dev": "eu-west-1", ...}'`` prints, as JSON,
the templates it linted and every match. The test session starts it right after synthesis,
so that linting (CPU-bound, a few seconds per template) overlaps with the other tests
instead of adding to them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cfnlint.api import lint
from cfnlint.config import ConfigMixIn
from cfnlint.runner.cli import Runner


def lint_assembly(outdir: Path, regions: dict[str, str]) -> dict[str, Any]:
    """Every template of every stage (``assembly-<stage>``) linted in the stage's region."""
    templates, matches = [], []
    for stage, region in regions.items():
        rules = Runner(ConfigMixIn(regions=[region])).rules  # built once: ~1 s each time
        for template in sorted((outdir / f"assembly-{stage}").glob("*.template.json")):
            templates.append({"stage": stage, "template": template.name})
            text = template.read_text(encoding="utf-8")
            for match in lint(text, rules=rules, regions=[region]):
                matches.append(
                    {
                        "stage": stage,
                        "template": template.name,
                        "rule": match.rule.id,
                        "message": match.message,
                    }
                )
    return {"templates": templates, "matches": matches}


if __name__ == "__main__":
    json.dump(lint_assembly(Path(sys.argv[1]), json.loads(sys.argv[2])), sys.stdout)
