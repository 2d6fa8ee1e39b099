"""The HTML format: one self-contained page with a summary, two inline SVG trend charts, the
expiring exemptions and the rows to act on.

No script and no external load: a Content-Security-Policy forbids both, so the page renders the
same offline, and a hostile app name or tag cannot run anything in an analyst's browser. Every
value is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import IO, Any

from .spool import LIST_ORDER, ListSpool
from .summary import ReportContext, Summary
from .values import STATUSES, resource_label, run_counts, run_started, subscription_label, text

COLOURS: dict[str, str] = {
    "PASS": "#2e7d32",
    "WARN": "#e08600",
    "FAIL": "#c62828",
    "EXEMPT": "#1565c0",
    "ERROR": "#6a1b9a",
}
#: The second trend chart: PASS usually dwarfs these, so they get a scale of their own.
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
        f'<svg id="{chart_id}" class="trend-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="Status counts over the last {len(runs)} runs">',
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


# -- page -----------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f1f1f;background:#fff}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.15rem;margin:28px 0 8px}
.meta{color:#555;margin:0 0 16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border-radius:8px;padding:10px 16px;min-width:96px;color:#fff}
.card b{display:block;font-size:1.6rem}
table{border-collapse:collapse;font-size:.9rem;width:100%}
th,td{border-bottom:1px solid #e0e0e0;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}
td.num,th.num{text-align:right}
.badge{display:inline-block;border-radius:4px;padding:1px 6px;color:#fff;font-weight:600;font-size:.8rem}
.new{color:#c62828;font-weight:700}
.fix{color:#444;font-family:ui-monospace,Consolas,monospace;font-size:.8rem}
.axis{font-size:11px;fill:#555}.legend{font-size:12px;fill:#222}
.empty{color:#555}figure{margin:0 0 12px}figcaption{color:#555;font-size:.85rem}
"""


def _e(value: Any) -> str:
    return html.escape(text(value))


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLOURS.get(status, "#555")}">{_e(status)}</span>'


def _html_row(row: Mapping[str, Any], with_run: bool) -> str:
    status = text(row.get("Status"))
    cells = [f"<td>{_e(row.get('RunId'))}</td>"] if with_run else []
    cells += [
        f"<td>{_badge(status)}</td>",
        f'<td class="new">{"new" if row.get("NewFailure") is True else ""}</td>',
        f'<td title="{_e(row.get("ResourceId"))}">{_e(resource_label(row))}</td>',
        f"<td>{_e(row.get('ResourceGroup'))}</td>",
        f'<td class="sub" title="{_e(row.get("SubscriptionId"))}">{_e(subscription_label(row))}</td>',
        f'<td class="owner">{_e(row.get("Owner"))}</td>',
        f"<td>{_e(row.get('ClientCertMode'))}</td>",
        f"<td>{_e(row.get('Reason'))}"
        + (f'<div class="fix">{_e(row.get("Remediation"))}</div>' if row.get("Remediation") else "")
        + "</td>",
    ]
    line = "".join(cells).replace("\r", " ").replace("\n", " ")  # one line per row: ListSpool replays by line
    return f'<tr class="status-{html.escape(status)}">{line}</tr>\n'


def _html_summary(summary: Summary) -> list[str]:
    cards = "".join(
        f'<div class="card" id="count-{s}" style="background:{COLOURS[s]}"><b>{summary.by_status.get(s, 0)}</b>{s}</div>'
        for s in STATUSES
    )
    groups = "".join(
        f"<tr><td>{_e(label)}</td>"
        + "".join(f'<td class="num">{c.get(s, 0)}</td>' for s in STATUSES)
        + f'<td class="num">{sum(c.values())}</td></tr>'
        for label, c in summary.groups_worst_first()
    )
    head = "".join(f'<th class="num">{s}</th>' for s in STATUSES) + '<th class="num">Total</th>'
    name = summary.group_by.replace("-", " ")
    return [
        f'<div class="cards">{cards}<div class="card" style="background:#333"><b>{summary.new_failures}</b>'
        "new failures</div></div>",
        f'<h2>By {name}</h2><table id="by-{summary.group_by}" class="groups"><tr><th>{name.capitalize()}</th>'
        f"{head}</tr>{groups}</table>",
    ]


def _table(table_id: str, headings: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain table of already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _html_exemptions(ctx: ReportContext, summary: Summary) -> list[str]:
    out = [f"<h2>Exemptions expiring within {ctx.expiring_days} days</h2>"]
    if ctx.expiring:
        expiring = (
            (f"{e.expires.astimezone(UTC):%Y-%m-%d %H:%M} UTC", _e(e.scope), _e(e.reason), _e(e.approver))
            for e in ctx.expiring
        )
        out.append(_table("expiring", ("Expires", "Scope", "Reason", "Approver"), expiring))
    else:
        out.append('<p class="empty">None.</p>')
    if ctx.broken:
        broken = ((_e(b.scope), _e(b.problem), _e(b.row)) for b in ctx.broken)
        out.append(
            f"<h2>Broken exemptions ({len(ctx.broken)})</h2>"
            "<p>These rows exempt nothing: their resources are audited as if unexempted. Fix each row, or remove it "
            "with <code>clientcert-audit exempt remove</code>.</p>"
            + _table("broken", ("Scope", "Problem", "Row"), broken)
        )
    if summary.requests_total:
        requests = (
            (_badge(text(r.get("Status"))), _e(r.get("ResourceId")), _e(r.get("ExemptionRequest")))
            for r in summary.requests
        )
        out.append(
            f"<h2>Exemption requests from tags ({summary.requests_total})</h2>"
            "<p>Requests only: nothing is exempt until the security team runs <code>clientcert-audit exempt add</code>.</p>"
            + _table("requests", ("Status", "Resource", "Request"), requests)
        )
    return out


def _html_trend_table(runs: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f'<th class="num">{s}</th>' for s in STATUSES)
    body = "".join(
        f"<tr><td>{_e(r.get('RowKey'))}</td><td>{_e(r.get('Outcome'))}</td><td>{_e(run_started(r))}</td>"
        + "".join(f'<td class="num">{v}</td>' for v in run_counts(r).values())
        + f'<td class="num">{int(r.get("NewFailures") or 0)}</td></tr>'
        for r in reversed(runs)
    )
    return (
        "<details><summary>Counts per run</summary>"
        f'<table id="trend-table"><tr><th>Run</th><th>Outcome</th><th>Started</th>{head}'
        f'<th class="num">New</th></tr>{body}</table></details>'
    )


def _html_head(ctx: ReportContext) -> list[str]:
    return [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Client certificate audit - {_e(ctx.title())}</title><style>{_CSS}</style></head><body>",
        f'<h1>Client certificate audit</h1><p class="meta">{_e(ctx.title())} · selection: {_e(ctx.flt.describe())}'
        f" · generated {_e(ctx.generated_at.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC'))}</p>",
    ]


def _html_trend(trend: Sequence[Mapping[str, Any]]) -> list[str]:
    """Both charts and the counts behind them (``""`` placeholders keep the page's line layout)."""
    return [
        f"<h2>Trend over the last {len(trend)} runs</h2>",
        f'<figure id="trend">{trend_svg(trend)}<figcaption>Every status</figcaption></figure>',
        '<figure id="trend-issues">'
        + trend_svg(trend, ISSUE_STATUSES, "trend-chart-issues")
        + "<figcaption>Without PASS, on a scale of its own: what needs attention</figcaption></figure>"
        if trend
        else "",
        _html_trend_table(trend) if trend else "",
    ]


def _html_list_head(ctx: ReportContext, listed: int, shown: int) -> str:
    which = "/".join(s for s in LIST_ORDER if s in ctx.listed)
    columns = ("<th>Run</th>" if ctx.multi_run else "") + (
        "<th>Status</th><th>New</th><th>App</th><th>Resource group</th><th>Subscription</th>"
        "<th>Owner</th><th>Mode</th><th>Reason and fix</th>"
    )
    truncated = (
        f'<p class="meta" id="truncated">The first {shown} of {listed}, worst first; every one of them: '
        "<code>--format csv</code>, or a larger <code>--html-rows</code>.</p>"
        if shown < listed
        else ""
    )
    return (
        f"<h2>{which} resources ({listed})</h2>{truncated}"
        f'<table id="findings"><thead><tr>{columns}</tr></thead><tbody>\n'
    )


def write_html(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """A self-contained page: summary, trend chart (inline SVG), expiring exemptions, rows to act on
    (at most ``ctx.html_rows`` of them, worst first)."""
    summary = ctx.summary()
    with ListSpool(ctx.html_rows) as spool:
        for row in rows:
            summary.add(row)
            if str(row.get("Status")) in ctx.listed:
                spool.write(str(row.get("Status")), _html_row(row, ctx.multi_run))
        page = [
            *_html_head(ctx),
            *_html_summary(summary),
            *_html_trend(ctx.trend),
            *_html_exemptions(ctx, summary),
            _html_list_head(ctx, spool.count, spool.shown),
        ]
        out.write("\n".join(page))
        spool.copy_to(out)
    out.write(
        "</tbody></table>" + ("" if spool.count else '<p class="empty">Nothing to act on.</p>') + "</body></html>\n"
    )
    return summary
