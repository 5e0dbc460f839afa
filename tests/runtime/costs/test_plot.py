"""The plot: both panels drawn with labelled axes, each option a line, break-even marked."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy
import pytest
from milequest.costs import CostError, CostErrorCode, PriceBook, estimate
from milequest.costs.plot import plot


def test_plot_draws_labelled_panels_with_break_even_marks(book: PriceBook, tmp_path: Path) -> None:
    result = estimate(
        {"peak_connections": 5_000, "events_per_month": 3e6, "emails_per_month": 60_000},
        book,
        today=date(2026, 11, 29),
    )
    path = tmp_path / "costs.png"
    figure = plot(result, book, path)
    assert path.stat().st_size > 20_000
    realtime, email = figure.axes
    assert realtime.get_xlabel().startswith("Peak concurrent connections")
    assert email.get_xlabel() == "Emails per month"
    for axes in (realtime, email):
        assert axes.get_ylabel() == "Monthly cost (USD)"
        assert axes.get_xscale() == "log"
        legend_box = axes.get_legend()
        assert legend_box is not None
        legend = [t.get_text() for t in legend_box.get_texts()]
        assert "this profile" in legend
    labels = {line.get_label() for line in realtime.get_lines()}
    assert {"API Gateway + our stack", "Pusher Channels"} <= labels
    assert {"Amazon SES", "Resend", "SendGrid"} <= {line.get_label() for line in email.get_lines()}
    # One dotted line and one annotation per break-even point.
    for axes, kind in ((realtime, "realtime"), (email, "email")):
        points = [b for b in result.break_even if b.kind == kind]
        assert points
        dotted = [line for line in axes.get_lines() if line.get_linestyle() == ":"]
        assert len(dotted) == len(points)
        notes = [t for t in axes.texts if t.get_text().startswith("break-even")]
        assert len(notes) == len(points)
    # The axis runs to at least 10x the profile; Pusher has no published plan past 30,000
    # connections, so its line stops there.
    (pusher,) = [line for line in realtime.get_lines() if line.get_label() == "Pusher Channels"]
    xs, ys = (numpy.asarray(data, dtype=float).tolist() for data in pusher.get_data())
    beyond = [y for x, y in zip(xs, ys, strict=True) if x > 30_001]
    assert beyond
    assert all(math.isnan(y) for y in beyond)


def test_a_profile_without_email_says_so(book: PriceBook, tmp_path: Path) -> None:
    result = estimate({"peak_connections": 50}, book)
    figure = plot(result, book, tmp_path / "p.png")
    assert "no email usage" in figure.axes[1].texts[0].get_text()


def test_an_unwritable_path_is_a_typed_error(book: PriceBook, tmp_path: Path) -> None:
    result = estimate({"peak_connections": 50}, book)
    with pytest.raises(CostError) as info:
        plot(result, book, tmp_path / "missing-dir" / "p.png")
    assert info.value.code is CostErrorCode.CONFIGURATION
