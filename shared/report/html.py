"""The HTML format: one self-contained page an analyst acts on at a glance.

From the top: the compliance percentage and the counts (new failures first, fixed and gone since
the last run); where the work is (a bar per subscription, worst first, and the summary table); the
exemptions about to expire; the resources to act on, **new failures first, then FAIL by worst
subscription, then ERROR, then WARN**, each with a link to its Configuration blade in the portal,
its full id (one click selects it) and its fix command; the trend last.

No script and no external load: a Content-Security-Policy forbids both, so the page renders the
same offline and in a mail preview, and a hostile app name or tag cannot run anything in an
analyst's browser. Every value is escaped. The layout is fluid: charts scale with the page, the
table wraps long names and commands, and below 760 px each resource becomes a card.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC
from typing import IO, Any

from .charts import COLOURS as COLOURS
from .charts import ISSUE_STATUSES as ISSUE_STATUSES
from .charts import subscription_bars, trend_svg, worst_first
from .fixscript import command_of, portal_link
from .spool import LIST_ORDER, RankedSpool
from .summary import ReportContext, Summary
from .values import STATUSES, resource_label, run_counts, run_started, subscription_label, text

#: The order of the list: new failures, then FAIL, ERROR, WARN, EXEMPT, PASS (each by worst subscription).
LIST_BUCKETS: tuple[str, ...] = ("NEW", "FAIL", "ERROR", "WARN", "EXEMPT", "PASS")


# -- page -----------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px auto;padding:0 16px;max-width:1400px;color:#1f1f1f;background:#fff}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.15rem;margin:28px 0 8px}
.meta{color:#555;margin:0 0 16px}
.headline{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.compliance{border:2px solid #2e7d32;border-radius:8px;padding:8px 16px;flex:0 1 300px}
.compliance b{display:block;font-size:2.2rem;color:#2e7d32}
.cards{display:flex;gap:10px;flex-wrap:wrap;flex:1 1 420px}
.card{border-radius:8px;padding:8px 14px;min-width:88px;color:#fff}
.card b{display:block;font-size:1.5rem}
.card.quiet{background:#f1f1f1;color:#1f1f1f}
.chart{display:block;height:auto}
table{border-collapse:collapse;font-size:.9rem;width:100%}
th,td{border-bottom:1px solid #e0e0e0;padding:5px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
table.findings td,td.id{overflow-wrap:anywhere}
th{background:#f3f3f3}
td.num,th.num{text-align:right}
table.findings{table-layout:fixed}
.badge{display:inline-block;border-radius:4px;padding:1px 6px;color:#fff;font-weight:600;font-size:.8rem}
.badge.new{background:#000;margin-top:4px}
.rg,.sub-id{color:#555;font-size:.85rem}
code{font-family:ui-monospace,Consolas,monospace;font-size:.8rem;white-space:pre-wrap;word-break:break-all}
code.id,code.fix{display:block;user-select:all;-webkit-user-select:all;background:#f6f6f6;border-radius:4px;padding:2px 4px;margin-top:4px}
.how{color:#444;font-size:.85rem;margin-top:4px}
.axis{font-size:11px;fill:#555}.legend{font-size:12px;fill:#222}.light{fill:#fff}
#subscription-chart .legend{font-size:15px}#subscription-chart .axis{font-size:13px}
.empty{color:#555}figure{margin:0 0 12px}figcaption{color:#555;font-size:.85rem}
@media (max-width:760px){
 table.findings,table.findings tbody,table.findings tr,table.findings td{display:block;width:auto}
 table.findings thead,table.findings colgroup{display:none}
 table.findings tr{border:1px solid #e0e0e0;border-radius:6px;margin:0 0 10px;padding:4px}
 table.findings td{border:0;padding:3px 6px}
 table.findings td:empty{display:none}
 table.findings td[data-label]:before{content:attr(data-label) ": ";color:#555;font-size:.8rem}
}
"""


def _e(value: Any) -> str:
    return html.escape(text(value))


#: Where a mode like ``OptionalInteractiveUser`` may break in a narrow column: between its words.
_CAMEL_BREAK = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLOURS.get(status, "#555")}">{_e(status)}</span>'


def list_bucket(row: Mapping[str, Any]) -> int:
    """Where a row comes in the list (:data:`LIST_BUCKETS`): new failures first."""
    status = str(row.get("Status") or "")
    if status == "FAIL" and row.get("NewFailure") is True:
        return 0
    return LIST_BUCKETS.index(status) if status in LIST_BUCKETS else len(LIST_BUCKETS)


def _html_row(row: Mapping[str, Any], with_run: bool, tenant: str) -> str:
    status = text(row.get("Status"))
    resource_id = str(row.get("ResourceId") or "")
    new = '<br><span class="badge new">NEW</span>' if row.get("NewFailure") is True else ""
    name = _e(resource_label(row))
    link = f'<a href="{html.escape(portal_link(resource_id, tenant))}">{name}</a>' if row.get("AppName") else name
    how, command = command_of(str(row.get("Remediation") or ""))
    cells = [f'<td data-label="Run">{_e(row.get("RunId"))}</td>'] if with_run else []
    cells += [
        f'<td class="status">{_badge(status)}{new}</td>',
        f'<td class="resource">{link}<div class="rg">{_e(row.get("ResourceGroup"))}</div>'
        f'<code class="id" title="the full resource id: one click selects it">{html.escape(resource_id)}</code></td>',
        f'<td class="sub" data-label="Subscription" title="{_e(row.get("SubscriptionId"))}">{_e(subscription_label(row))}</td>',
        f'<td class="owner" data-label="Owner">{_e(row.get("Owner"))}</td>',
        f'<td class="mode" data-label="Mode">{_CAMEL_BREAK.sub("<wbr>", _e(row.get("ClientCertMode")))}</td>',
        f'<td class="reason">{_e(row.get("Reason"))}'
        + (f'<div class="how">{html.escape(how)}</div>' if how else "")
        + (f'<code class="fix" title="the fix: one click selects it">{html.escape(command)}</code>' if command else "")
        + "</td>",
    ]
    line = "".join(cells).replace("\r", " ").replace("\n", " ")  # one line per row: the spool replays by line
    new_class = " new-failure" if row.get("NewFailure") is True and status == "FAIL" else ""
    return f'<tr class="status-{html.escape(status)}{new_class}">{line}</tr>\n'


def _percent(value: float) -> str:
    """``87%``; one decimal where whole numbers would lie: never 100% while something fails, never
    0% while something passes."""
    whole = round(value)
    if whole == 100 and value < 100:
        return f"{math.floor(value * 10) / 10:.1f}%"
    if whole == 0 and value > 0:
        return f"{max(0.1, math.ceil(value * 10) / 10):.1f}%"
    return f"{whole}%"


def _html_headline(summary: Summary, ctx: ReportContext) -> str:
    percent = summary.compliance_percent()
    compliance = (
        f'<div class="compliance" id="compliance"><b>{_percent(percent)}</b>compliant: {summary.compliant} of '
        f"{summary.with_verdict} resources pass or are exempt"
        + (f" ({summary.by_status.get('ERROR', 0)} unreadable, not counted)" if summary.by_status.get("ERROR") else "")
        + "</div>"
        if percent is not None
        else '<div class="compliance" id="compliance"><b>–</b>no resource with a verdict</div>'
    )
    new = f'<div class="card" id="count-NEW" style="background:#000"><b>{summary.new_failures}</b>new failures</div>'
    cards = "".join(
        f'<div class="card" id="count-{s}" style="background:{COLOURS[s]}"><b>{summary.by_status.get(s, 0)}</b>{s}</div>'
        for s in ("FAIL", "WARN", "ERROR", "EXEMPT", "PASS")
    )
    gone = ctx.gone
    since = f'<div class="card quiet" id="count-fixed"><b>{summary.fixed}</b>fixed since the last run</div>' + (
        f'<div class="card quiet" id="count-gone"><b>{gone}</b>gone since the last run</div>'
        if gone is not None
        else ""
    )
    return f'<div class="headline">{compliance}<div class="cards">{new}{cards}{since}</div></div>'


def _html_groups(summary: Summary) -> list[str]:
    groups = "".join(
        f"<tr><td>{_e(label)}</td>"
        + "".join(f'<td class="num">{c.get(s, 0)}</td>' for s in STATUSES)
        + f'<td class="num">{sum(c.values())}</td></tr>'
        for label, c in summary.groups_worst_first()
    )
    head = "".join(f'<th class="num">{s}</th>' for s in STATUSES) + '<th class="num">Total</th>'
    name = summary.group_by.replace("-", " ")
    return [
        "<h2>Where the work is</h2>",
        f'<figure id="by-subscription-bars">{subscription_bars(summary)}<figcaption>Per subscription, worst first: '
        "the share of its resources that fail, warn, could not be read or are exempt (each bar on its own "
        "subscription's scale; the counts are written on it).</figcaption></figure>",
        f'<table id="by-{summary.group_by}" class="groups"><tr><th>{name.capitalize()}</th>{head}</tr>{groups}</table>',
    ]


def _table(table_id: str, headings: Sequence[str], rows: Iterable[Sequence[str]], ids: Sequence[int] = ()) -> str:
    """A plain table of already-escaped cells. Columns whose index is in ``ids`` hold resource ids (or
    other long unbroken text) and may wrap anywhere; the others wrap between words, so a short word or
    a badge is never cut."""
    head = "".join(f"<th>{h}</th>" for h in headings)
    cell = ('<td class="id">{}</td>', "<td>{}</td>")
    body = "".join("<tr>" + "".join(cell[i not in ids].format(c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _html_exemptions(ctx: ReportContext, summary: Summary) -> list[str]:
    out = [f"<h2>Exemptions expiring within {ctx.expiring_days} days</h2>"]
    if ctx.expiring:
        expiring = (
            (f"{e.expires.astimezone(UTC):%Y-%m-%d %H:%M} UTC", _e(e.scope), _e(e.reason), _e(e.approver))
            for e in ctx.expiring
        )
        out.append(_table("expiring", ("Expires", "Scope", "Reason", "Approver"), expiring, ids=(1,)))
    else:
        out.append('<p class="empty">None.</p>')
    if ctx.broken:
        broken = ((_e(b.scope), _e(b.problem), _e(b.row)) for b in ctx.broken)
        out.append(
            f"<h2>Broken exemptions ({len(ctx.broken)})</h2>"
            "<p>These rows exempt nothing: their resources are audited as if unexempted. Fix each row, or remove it "
            "with <code>clientcert-audit exempt remove</code>.</p>"
            + _table("broken", ("Scope", "Problem", "Row"), broken, ids=(0, 2))
        )
    if summary.requests_total:
        requests = (
            (_badge(text(r.get("Status"))), _e(r.get("ResourceId")), _e(r.get("ExemptionRequest")))
            for r in summary.requests
        )
        out.append(
            f"<h2>Exemption requests from tags ({summary.requests_total})</h2>"
            "<p>Requests only: nothing is exempt until the security team runs <code>clientcert-audit exempt add</code>.</p>"
            + _table("requests", ("Status", "Resource", "Request"), requests, ids=(1,))
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
    """The trend chart and the counts behind it, last: history, after what to act on."""
    if not trend:
        return [f"<h2>Trend</h2>{trend_svg(trend)}"]
    return [
        f"<h2>Trend over the last {len(trend)} runs</h2>",
        f'<figure id="trend">{trend_svg(trend)}<figcaption>Every status, run by run (hollow marker: a partial '
        "run)</figcaption></figure>",
        _html_trend_table(trend),
    ]


def _html_list_head(ctx: ReportContext, listed: int, shown: int) -> str:
    which = "/".join(s for s in LIST_ORDER if s in ctx.listed)
    run = '<col style="width:12%">' if ctx.multi_run else ""
    columns = ("<th>Run</th>" if ctx.multi_run else "") + (
        "<th>Status</th><th>Resource (portal link, resource group, id)</th><th>Sub&shy;scription</th>"
        "<th>Owner</th><th>Mode</th><th>Reason and fix</th>"
    )
    truncated = (
        f'<p class="meta" id="truncated">The first {shown} of {listed}, worst first; every one of them: '
        "<code>--format csv</code>, or a larger <code>--html-rows</code>.</p>"
        if shown < listed
        else ""
    )
    return (
        f'<h2>{which} resources ({listed})</h2><p class="meta">New failures first, then FAIL by worst '
        "subscription, then ERROR, then WARN.</p>"
        f'{truncated}<table id="findings" class="findings"><colgroup>{run}<col style="width:84px">'
        '<col style="width:24%"><col style="width:11%"><col style="width:12%"><col style="width:11%"><col>'
        f"</colgroup><thead><tr>{columns}</tr></thead><tbody>\n"
    )


def _group_order(summary: Summary) -> Callable[[Iterable[str]], list[str]]:
    rank = {sub: i for i, (sub, _) in enumerate(worst_first(summary))}
    return lambda groups: sorted(groups, key=lambda g: (rank.get(g, len(rank)), g))


def write_html(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """A self-contained page: headline, where the work is, expiring exemptions, the rows to act on
    (at most ``ctx.html_rows`` of them: new failures, then FAIL by worst subscription, then ERROR,
    then WARN), the trend (inline SVG)."""
    summary = ctx.summary()
    with RankedSpool(ctx.html_rows) as spool:
        for row in rows:
            summary.add(row)
            if str(row.get("Status")) in ctx.listed:
                group = str(row.get("SubscriptionId") or "").lower()
                spool.write(list_bucket(row), group, _html_row(row, ctx.multi_run, ctx.tenant_of(row)))
        page = [
            *_html_head(ctx),
            _html_headline(summary, ctx),
            *_html_groups(summary),
            *_html_exemptions(ctx, summary),
            _html_list_head(ctx, spool.count, spool.shown),
        ]
        out.write("\n".join(page))
        spool.copy_to(out, _group_order(summary))
    out.write("</tbody></table>" + ("" if spool.count else '<p class="empty">Nothing to act on.</p>'))
    out.write("\n".join(_html_trend(ctx.trend)) + "</body></html>\n")
    return summary
