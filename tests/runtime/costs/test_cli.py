"""The command line: the estimate table, JSON, refusals on one line, the plot."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milequest.costs.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_estimate_prints_a_table_per_option_totals_and_break_even() -> None:
    code, out, err = _run(
        "estimate", "--connections", "5000", "--events-per-day", "2e6", "--emails-per-day", "2000"
    )
    assert (code, err) == (0, "")
    for title in (
        "Realtime: API Gateway + our stack",
        "Realtime: Pusher Channels (plan Premium)",
        "Email: Amazon SES",
        "Email: Resend (plan Pro)",
        "Email: SendGrid (plan Essentials 50k)",
    ):
        assert title in out
    assert re.search(r"events triggered +60,000,000\n", out)
    assert "  realtime: API Gateway + our stack $" in out
    assert "Break-even" in out
    assert "peak connections" in out
    assert "12,000,000 messages a day" in out  # 2M events x (1 + 5 deliveries)


def test_json_output_is_the_estimate() -> None:
    code, out, _ = _run("estimate", "--connections", "300", "--format", "json", "--authorizer")
    assert code == 0
    data = json.loads(out)
    assert data["profile"]["peak_connections"] == 300
    assert data["stack"]["authorizer"] is True
    options = {o["option"]: o for o in data["options"]}
    assert options["pusher"]["plan"] == "Startup"
    assert any(i["name"] == "Lambda authorize" for i in options["apigateway"]["items"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--connections", "-5"], "peak_connections: Input should be greater than or equal to 0"),
        (["--connections", "1e12"], "peak_connections: Input should be less than or equal to"),
        (["--events-per-day", "-1"], "events_per_month"),
        (["--subscribers", "nan"], "subscribers_per_event"),
        (["--emails-per-month", "inf"], "emails_per_month"),
        (["--payload-bytes", "1.5"], "invalid int value"),
        (["--connections", "lots"], "invalid float value"),
        (["--events-per-day", "1", "--events-per-month", "30"], "not allowed with"),
        (["--session-minutes", "500"], "session_minutes"),
        (["--region", "eu-west-1"], "no prices for region 'eu-west-1'"),
        (["--lambda-memory-mb", "64"], "lambda_memory_mb"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_refused_on_one_line_with_exit_code_2(argv: list[str], message: str) -> None:
    code, out, err = _run("estimate", *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert message in err, err
    assert err.startswith("python -m milequest.costs: error: ")


def test_a_command_is_required() -> None:
    code, _, err = _run()
    assert code == 2
    assert err.count("\n") == 1


def test_a_stale_price_file_warns(tmp_path: Path) -> None:
    import milequest.costs as package

    data = json.loads((Path(package.__file__).parent / "prices.json").read_text())
    data["plans"][0]["date"] = "2020-01-01"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    code, out, err = _run("estimate", "--connections", "10", "--prices", str(path))
    assert code == 0
    assert "Totals" in out
    assert err.startswith("warning: price data is older than 6 months (oldest figure checked 2020")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "costs.png"
    code, out, _ = _run(
        "estimate", "--connections", "800", "--emails-per-day", "500", "--plot", str(path)
    )
    assert code == 0
    assert f"Plot written to {path}" in out
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000


def test_plot_without_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    code, _, err = _run("estimate", "--connections", "10", "--plot", str(tmp_path / "x.png"))
    assert code == 1
    assert err.count("\n") == 1
    assert "pip install 'milequest[plot]'" in err
    assert not (tmp_path / "x.png").exists()


def test_python_dash_m_runs_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "milequest.costs", "estimate", "--connections", "-1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "peak_connections" in done.stderr


@settings(max_examples=15)
@given(
    st.sampled_from(["--connections", "--events-per-day", "--subscribers", "--emails-per-day"]),
    st.one_of(st.floats(allow_nan=True), st.text(max_size=6)),
)
def test_property_any_number_is_answered_or_refused_on_one_line(flag: str, value: object) -> None:
    text = str(value)
    code, out, err = _run("estimate", f"{flag}={text}")
    assert code in (0, 2)
    if code == 2:
        assert out == ""
        assert err.count("\n") == 1
    else:
        assert "Totals" in out
