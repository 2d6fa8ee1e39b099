"""The HTML report's charts, as inline SVG: the trend of the last runs (a line per status, a partial
run hollow) and a bar per subscription, worst first. Scaled by the page, no script, every value
escaped (``html.py`` puts them on the page).
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .summary import Summary
from .values import STATUSES, run_counts, run_started, subscription_label

COLOURS: dict[str, str] = {
    "PASS": "#2e7d32",
    "WARN": "#e08600",
    "FAIL": "#c62828",
    "EXEMPT": "#1565c0",
    "ERROR": "#6a1b9a",
}
#: The statuses that need attention, worst first: the per-subscription bars stack them in this order.
ISSUE_STATUSES: tuple[str, ...] = ("FAIL", "WARN", "ERROR", "EXEMPT")


# -- trend chart ----------------------------------------------------------------------------------
def _nice_ceiling(value: int) -> int:
    """Smallest 1/2/5×10^k at or above ``value`` (at least 1): round numbers on the chart's axis."""
    if value <= 1:
        return 1
    exponent = int(10 ** math.floor(math.log10(value)))
    return next(step * exponent for step in (1, 2, 5, 10) if step * exponent >= value)


@dataclass(frozen=True)
class _Plot:
    """The chart's plot area and scales: run ``i`` at :meth:`x`, a count at :meth:`y`."""

    left: int
    top: int
    width: int
    height: int
    runs: int
    ymax: int

    def x(self, i: int) -> float:
        return self.left + (self.width * i / (self.runs - 1) if self.runs > 1 else self.width / 2)

    def y(self, v: int) -> float:
        return self.top + self.height * (1 - v / self.ymax)


def _grid(plot: _Plot) -> list[str]:
    """Horizontal gridlines at whole numbers, labelled on the left."""
    parts = []
    intervals = next(n for n in (5, 4, 2, 1) if plot.ymax % n == 0)
    for k in range(intervals + 1):
        value = plot.ymax * k // intervals
        y = plot.y(value)
        parts.append(
            f'<line x1="{plot.left}" x2="{plot.left + plot.width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{plot.left - 8}" y="{y + 4:.1f}" text-anchor="end" class="axis">{value}</text>'
        )
    return parts


def _run_labels(plot: _Plot, runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """At most about ten run labels under the plot: the day, or the time too when a day had several."""
    step = max(1, math.ceil(len(runs) / 10))
    days = [run_started(r)[:10] for r in runs]
    same_day = len(set(days)) < len(days)
    return [
        f'<text x="{plot.x(i):.1f}" y="{plot.top + plot.height + 18}" text-anchor="middle" class="axis">'
        f"{html.escape(run_started(run)[5:16] if same_day else days[i])}</text>"
        for i, run in enumerate(runs)
        if i % step == 0 or i == len(runs) - 1
    ]


def _series(plot: _Plot, runs: Sequence[Mapping[str, Any]], status: str, row_index: int) -> list[str]:
    """One status: its line, a marker per run (hollow for a partial run) and its legend entry."""
    colour = COLOURS[status]
    counts = [run_counts(r)[status] for r in runs]
    points = " ".join(f"{plot.x(i):.1f},{plot.y(c):.1f}" for i, c in enumerate(counts))
    parts = [
        f'<polyline class="series series-{status}" fill="none" stroke="{colour}" stroke-width="2.5" points="{points}"/>'
    ]
    for i, (run, count) in enumerate(zip(runs, counts, strict=True)):
        hollow = run.get("Outcome") != "complete"
        tip = html.escape(f"{run.get('RowKey')} ({run.get('Outcome')}): {status} {count}")
        parts.append(
            f'<circle cx="{plot.x(i):.1f}" cy="{plot.y(count):.1f}" r="4" stroke="{colour}" stroke-width="2" '
            f'fill="{"#fff" if hollow else colour}"><title>{tip}</title></circle>'
        )
    ly, lx = plot.top + 14 + row_index * 22, plot.left + plot.width + 16
    parts.append(
        f'<rect x="{lx}" y="{ly - 10}" width="14" height="14" fill="{colour}"/>'
        f'<text x="{lx + 20}" y="{ly + 2}" class="legend">{status}</text>'
    )
    return parts


def trend_svg(
    runs: Sequence[Mapping[str, Any]],
    statuses: Sequence[str] = STATUSES,
    chart_id: str = "trend-chart",
    width: int = 960,
    height: int = 300,
) -> str:
    """An inline SVG line chart of the given statuses' counts per run (no script, no CDN).

    Partial runs are drawn with hollow markers: their counts miss the subscriptions they could not read.
    """
    if not runs:
        return '<p class="empty">No complete or partial run to chart yet.</p>'
    left, right, top, bottom = 64, 120, 16, 56
    ymax = _nice_ceiling(max(run_counts(r)[s] for r in runs for s in statuses))
    plot = _Plot(left, top, width - left - right, height - top - bottom, len(runs), ymax)
    parts = [
        f'<svg id="{chart_id}" class="chart trend-chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" role="img" '
        f'aria-label="Status counts over the last {len(runs)} runs" style="max-width:{width}px">',
        f'<rect x="{left}" y="{top}" width="{plot.width}" height="{plot.height}" fill="#fafafa" stroke="#ccc"/>',
        *_grid(plot),
        *_run_labels(plot, runs),
    ]
    for row_index, status in enumerate(statuses):
        parts += _series(plot, runs, status, row_index)
    parts.append(
        f'<text x="{left + plot.width / 2:.1f}" y="{height - 12}" text-anchor="middle" class="axis">'
        "run (hollow marker: partial run)</text></svg>"
    )
    return "".join(parts)


# -- per-subscription bars -------------------------------------------------------------------------
#: Subscriptions drawn in the bar chart (the worst); the table below it has every one.
BAR_SUBSCRIPTIONS = 15


def worst_first(summary: Summary) -> list[tuple[str, Counter[str]]]:
    """Subscriptions (lower-cased id, counts), worst first: most FAIL, then WARN, then ERROR, then by name."""
    return sorted(
        summary.by_subscription.items(),
        key=lambda kv: (
            -kv[1]["FAIL"],
            -kv[1]["WARN"],
            -kv[1]["ERROR"],
            summary.subscription_names.get(kv[0], kv[0]).casefold(),
        ),
    )


def subscription_bars(summary: Summary, width: int = 960) -> str:
    """A horizontal bar per subscription (the worst :data:`BAR_SUBSCRIPTIONS`), each as long as the
    subscription's share of FAIL, WARN, ERROR and EXEMPT among its resources (its own scale: a small
    subscription with everything failing shows full), labelled with its counts."""
    ranked = [(sub, c) for sub, c in worst_first(summary) if sum(c.values())][:BAR_SUBSCRIPTIONS]
    if not ranked:
        return '<p class="empty">No resource in this selection.</p>'
    label_w, bar_h, gap, top = 300, 18, 12, 24
    plot_w = width - label_w - 24
    height = top + len(ranked) * (bar_h + gap) + 8
    parts = [
        f'<svg id="subscription-chart" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" role="img" style="max-width:{width}px" '
        'aria-label="Share of resources that need attention, per subscription, worst first">',
        f'<text x="{label_w}" y="14" class="axis">0%</text>'
        f'<text x="{label_w + plot_w}" y="14" text-anchor="end" class="axis">100% of the subscription\'s resources</text>',
    ]
    for i, (sub, counts) in enumerate(ranked):
        y = top + i * (bar_h + gap)
        total = sum(counts.values())
        label = subscription_label({"SubscriptionId": sub, "SubscriptionName": summary.subscription_names.get(sub, "")})
        shown = label if len(label) <= 40 else label[:39] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end" class="legend">{html.escape(shown)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{plot_w}" height="{bar_h}" fill="#e8f5e9"/>'
        )
        x = float(label_w)
        for status in ISSUE_STATUSES:
            part = plot_w * counts.get(status, 0) / total
            if part > 0:
                tip = html.escape(f"{label}: {status} {counts[status]} of {total}")
                parts.append(
                    f'<rect class="bar bar-{status}" x="{x:.1f}" y="{y}" width="{part:.1f}" height="{bar_h}" '
                    f'fill="{COLOURS[status]}"><title>{tip}</title></rect>'
                )
                x += part
        counts_text = " · ".join(f"{counts[s]} {s}" for s in ISSUE_STATUSES if counts.get(s)) or "all PASS"
        anchor, tx, cls = (
            ("end", label_w + plot_w - 6, "legend")
            if x < label_w + plot_w - 200
            else ("start", label_w + 6, "legend light")
        )
        parts.append(
            f'<text x="{tx}" y="{y + 13}" text-anchor="{anchor}" class="{cls}">{html.escape(counts_text)} of {total}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
