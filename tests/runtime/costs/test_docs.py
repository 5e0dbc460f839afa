"""docs/costs.md: its worked example is what the model says today, and its plot exists."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path

from milequest.costs.cli import main

DOCS = Path(__file__).resolve().parents[3] / "docs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _worked_example() -> tuple[list[str], str]:
    text = (DOCS / "costs.md").read_text()
    section = text[text.index("## Worked example") :]
    command = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert command is not None
    argv = shlex.split(command.group(1).replace("\\\n", " "))
    assert argv[:3] == ["python", "-m", "milequest.costs"]
    plot = argv.index("--plot")
    return argv[3:plot] + argv[plot + 2 :], section


def test_the_worked_example_matches_the_model() -> None:
    argv, section = _worked_example()
    out = io.StringIO()
    assert main([*argv, "--format", "json"], stdout=out) == 0
    totals = {o["option"]: o["total_usd"] for o in json.loads(out.getvalue())["options"]}
    labels = {
        "apigateway": "API Gateway + our stack",
        "pusher": "Pusher Channels",
        "ses": "Amazon SES",
        "sendgrid": "SendGrid",
        "resend": "Resend",
    }
    for option, label in labels.items():
        row = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
        assert f"${totals[option]:,.2f}" in row, (row, totals[option])


def test_the_plot_is_checked_in() -> None:
    data = (DOCS / "costs-break-even.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000
    assert "(costs-break-even.png)" in (DOCS / "costs.md").read_text()
