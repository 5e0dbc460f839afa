"""Render the README's configuration table from the settings models (the source of truth).

`python scripts/config_table.py` rewrites the table between the README's markers;
`--check` exits non-zero when the README is out of date (the test suite runs that check).
"""

from __future__ import annotations

import sys
from pathlib import Path

from milequest.local.stack import LocalStackSettings
from milequest.services.email.settings import EmailSettings
from milequest.services.flags import FlagSettings
from milequest.services.routing import RoutingSettings
from milequest.services.websocket.settings import WebSocketSettings
from milequest.web.settings import WebSettings
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"

# Variables read outside the settings models.
EXTRA_ROWS: list[tuple[str, str, str, str]] = [
    (
        "Metrics",
        "METRICS_SINK",
        "emf in Lambda, else none",
        "emf (CloudWatch EMF via Powertools) | memory | none",
    ),
    ("Metrics", "METRICS_NAMESPACE", "MileQuest", "CloudWatch namespace of service metrics"),
    (
        "WebSocket",
        "WEBSOCKET_TOKEN_VERIFIER",
        "built-in",
        "module:function verifying connection tokens in the authorizer (see the protocol doc)",
    ),
    (
        "AWS",
        "AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_<SERVICE>",
        "AWS",
        "Standard SDK endpoint overrides (the local stack sets them)",
    ),
]


def _env_names(prefix: str, name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return " or ".join(str(c).upper() for c in choices)
    return f"{prefix}{name}".upper()


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _rows(section: str, model: type[BaseSettings]) -> list[tuple[str, str, str, str]]:
    prefix = str(model.model_config.get("env_prefix", ""))
    return [
        (section, _env_names(prefix, name, field), _default(field), field.description or "")
        for name, field in model.model_fields.items()
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    rows = (
        _rows("Email", EmailSettings)
        + _rows("WebSocket", WebSocketSettings)
        + _rows("HTTP app", WebSettings)
        + _rows("Migration", RoutingSettings)
        + _rows("Migration", FlagSettings)
        + EXTRA_ROWS
        + _rows("Local stack", LocalStackSettings)
    )
    lines = ["| Area | Variable | Default | What it does |", "|---|---|---|---|"]
    lines += [f"| {a} | `{v}` | {_cell(d)} | {_cell(w)} |" for a, v, d, w in rows]
    return "\n".join(lines)


def current() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def main() -> int:
    table = render()
    if "--check" in sys.argv:
        if current() != table:
            print("README configuration table is out of date: run scripts/config_table.py")
            return 1
        return 0
    text = README.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
