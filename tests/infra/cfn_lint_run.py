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

from cfnlint.config import ConfigMixIn
from cfnlint.decode.decode import decode_str
from cfnlint.runner import run_template_by_data
from cfnlint.runner.cli import Runner


def lint_assembly(outdir: Path, regions: dict[str, str]) -> dict[str, Any]:
    """Every template of every stage (``assembly-<stage>``) linted in the stage's region.

    What ``cfnlint.api.lint`` does, with the rules loaded once per region: ``lint`` reuses
    only a ``RulesCollection``, which cfn-lint 1.x's ``Runner`` no longer returns, and loads
    every rule again for each template otherwise (about 2 s of CPU each).
    """
    templates, matches = [], []
    rules_by_region: dict[str, Any] = {}
    for stage, region in regions.items():
        config = ConfigMixIn(regions=[region])
        if region not in rules_by_region:
            rules_by_region[region] = Runner(config).rules
        rules = rules_by_region[region]
        for template in sorted((outdir / f"assembly-{stage}").glob("*.template.json")):
            templates.append({"stage": stage, "template": template.name})
            decoded, errors = decode_str(template.read_text(encoding="utf-8"))
            found = errors or (
                [] if decoded is None else run_template_by_data(decoded, config, rules)
            )
            for match in found:
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
