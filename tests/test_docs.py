"""The README's configuration table is generated from the settings models and kept current."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "config_table.py"


def test_readme_configuration_table_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--check"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_info.value.code == 0, "run: .venv/bin/python scripts/config_table.py"


def test_table_names_every_setting() -> None:
    from milequest.services.email.settings import EmailSettings
    from milequest.services.websocket.settings import WebSocketSettings

    table = runpy.run_path(str(SCRIPT))["render"]()
    for model in (EmailSettings, WebSocketSettings):
        for name in model.model_fields:
            if name != "pusher_key":
                assert f"`{name.upper()}`" in table
    assert "`NEXT_PUBLIC_PUSHER_KEY or PUSHER_KEY`" in table
