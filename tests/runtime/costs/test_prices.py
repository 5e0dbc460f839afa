"""The packaged price data: sourced, dated, consistent, never duplicated in code."""

from __future__ import annotations

import io
import json
import tokenize
from datetime import date
from pathlib import Path

import milequest.costs as costs_package
import pytest
from milequest.costs import CostError, CostErrorCode, load_prices
from milequest.costs.prices import graduated

PACKAGE = Path(costs_package.__file__).parent
REPO = Path(__file__).resolve().parents[3]


def test_every_figure_has_a_region_a_source_and_a_date() -> None:
    book = load_prices()
    figures = [*book.unit_prices, *book.plans]
    assert len(figures) > 20
    for figure in figures:
        assert figure.region
        assert figure.source.startswith("https://")
        assert figure.seen_at.startswith("https://")
        assert isinstance(figure.date, date)
    assert {p.region for p in book.plans} == {"global"}
    assert book.default_region in book.regions()


def test_graduated_tiers_price_each_slice_at_its_rate() -> None:
    book = load_prices()
    tiers = book.tiers("apigateway.websocket.messages", "us-east-1")
    # $1.00 a million up to a billion, $0.80 a million above.
    assert graduated(1_000_000_000, tiers) == pytest.approx(1_000.00)
    assert graduated(999_000_000, tiers) == pytest.approx(999.00)
    assert graduated(1_001_000_000, tiers) == pytest.approx(1_000.80)
    assert graduated(3_000_000_000, tiers) == pytest.approx(1_000 + 2_000 * 0.80)
    assert graduated(0, tiers) == 0


def test_a_warning_once_the_oldest_figure_is_six_months_old(tmp_path: Path) -> None:
    data = json.loads((PACKAGE / "prices.json").read_text())
    data["unit_prices"][3]["date"] = "2026-01-31"
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    book = load_prices(path)
    assert book.oldest() == date(2026, 1, 31)
    assert book.staleness_warning(date(2026, 7, 30)) is None
    warning = book.staleness_warning(date(2026, 7, 31))
    assert warning is not None
    assert "2026-01-31" in warning
    # February has no 31st: six months after Aug 31 is the end of February.
    data["unit_prices"][3]["date"] = "2025-08-31"
    path.write_text(json.dumps(data))
    assert load_prices(path).staleness_warning(date(2026, 2, 27)) is None
    assert load_prices(path).staleness_warning(date(2026, 2, 28)) is not None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["unit_prices"][0].pop("source"), "source"),
        (lambda d: d["unit_prices"][0].update(usd=-1), "usd"),
        (lambda d: d["unit_prices"][0].update(tier_up_to=None), "only the last tier"),
        (lambda d: d["plans"][0].update(date="yesterday"), "date"),
        (lambda d: d.update(default_region="mars-north-1"), "default_region"),
        (lambda d: d["plans"][1].pop("max_connections"), "give both of its limits"),
    ],
)
def test_an_inconsistent_file_is_refused(tmp_path: Path, mutate: object, message: str) -> None:
    data = json.loads((PACKAGE / "prices.json").read_text())
    mutate(data)  # type: ignore[operator]
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CostError) as info:
        load_prices(path)
    assert info.value.code is CostErrorCode.INVALID_PRICES
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_or_broken_files_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(CostError) as missing:
        load_prices(tmp_path / "none.json")
    assert missing.value.code is CostErrorCode.INVALID_PRICES
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CostError) as bad:
        load_prices(broken)
    assert bad.value.code is CostErrorCode.INVALID_PRICES


def test_unknown_region_names_the_known_ones() -> None:
    with pytest.raises(CostError) as info:
        load_prices().resolve_region("eu-west-1")
    assert info.value.code is CostErrorCode.UNKNOWN_REGION
    assert "us-east-1" in str(info.value)


def _numbers(path: Path) -> set[float]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return {float(t.string.replace("_", "")) for t in tokens if t.type == tokenize.NUMBER}


def test_no_price_is_written_in_code() -> None:
    book = load_prices()
    prices = {p.usd for p in book.unit_prices} | {p.usd_month for p in book.plans}
    prices |= {p.overage_usd_per_1000 for p in book.plans if p.overage_usd_per_1000}
    # Only figures specific enough to identify (0.1 or 49 could be anything).
    distinctive = {p for p in prices if len(f"{p:g}".strip("0.").replace(".", "")) >= 3}
    assert {0.625, 24.95, 1199} <= distinctive
    sources = [*PACKAGE.glob("*.py"), REPO / "infra" / "costs.py"]
    for source in sources:
        assert not (_numbers(source) & distinctive), source
