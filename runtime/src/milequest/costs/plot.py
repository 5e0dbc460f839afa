"""Monthly cost against scale for each option, with the break-even points marked.

matplotlib is the runtime's optional ``plot`` extra: it is imported only here, when a plot
is asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import cost_error
from .estimate import SCALE_RANGE, Estimate, pricers, scaled
from .prices import PriceBook
from .profile import DAYS_PER_MONTH
from .results import OPTION_LABELS, Kind

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_POINTS = 200
INSTALL_HINT = "plotting needs matplotlib: pip install 'milequest[plot]'"


def plot(result: Estimate, prices: PriceBook, path: str | Path) -> Figure:
    """Draw ``result``'s options against scale into the PNG at ``path``; returns the figure."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise cost_error("CONFIGURATION", INSTALL_HINT, cause=exc) from exc

    figure = Figure(figsize=(13, 5.5), layout="constrained")
    realtime, email = figure.subplots(1, 2)
    _panel(realtime, result, prices, "realtime")
    _panel(email, result, prices, "email")
    figure.suptitle(
        f"Mile Quest monthly cost by scale ({result.region} prices, "
        f"figures checked {result.prices_checked.isoformat()})"
    )
    try:
        figure.savefig(Path(path), dpi=110, format="png")
    except (OSError, ValueError) as exc:
        raise cost_error("CONFIGURATION", f"cannot write the plot to {path}: {exc}") from exc
    return figure


def _axis(result: Estimate, kind: Kind) -> tuple[str, float]:
    """The x-axis label and the profile's value on it."""
    p = result.profile
    if kind == "email":
        return "Emails per month", p.emails_per_month
    if p.peak_connections:
        return "Peak concurrent connections (events scale with them)", p.peak_connections
    return "Events triggered per day", p.events_per_month / DAYS_PER_MONTH


def _panel(axes: Axes, result: Estimate, prices: PriceBook, kind: Kind) -> None:
    label, here = _axis(result, kind)
    axes.set_xlabel(label)
    axes.set_ylabel("Monthly cost (USD)")
    axes.set_title(f"{kind.capitalize()}: monthly cost against scale")
    if not here:
        note = f"no {kind} usage in this profile"
        axes.text(0.5, 0.5, note, ha="center", transform=axes.transAxes)
        return
    points = [b for b in result.break_even if b.kind == kind]
    lo = min([0.1, *(b.scale / 2 for b in points)])
    hi = max([10.0, *(b.scale * 2 for b in points)])
    lo, hi = max(lo, SCALE_RANGE[0]), min(hi, SCALE_RANGE[1])
    scales = [lo * (hi / lo) ** (i / (_POINTS - 1)) for i in range(_POINTS)]
    xs = [here * s for s in scales]
    price = pricers(result.stack, prices, result.region)
    for option in (o.option for o in result.options if o.kind == kind):
        ys = [price[option](scaled(result.profile, kind, s)).total_usd for s in scales]
        axes.plot(xs, [math.nan if y is None else y for y in ys], label=OPTION_LABELS[option])
    for index, point in enumerate(points):
        x = here * point.scale
        axes.axvline(x, color="grey", linestyle=":", linewidth=1)
        axes.plot([x], [point.monthly_usd], marker="o", color="black", markersize=4)
        axes.annotate(
            f"break-even\n{x:,.0f}",
            (x, point.monthly_usd),
            textcoords="offset points",
            xytext=(4, 6 if index % 2 == 0 else -22),  # neighbours' labels would overlap
            fontsize=7,
        )
    axes.axvline(here, color="tab:red", linestyle="--", linewidth=1, label="this profile")
    axes.set_xscale("log")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
