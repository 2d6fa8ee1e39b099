"""``clientcert-audit report``: rendering of plain rows, the partition queries, the docs' commands.

The command against Azurite (several runs written by the real engine) is in
``tests/integration/test_report_integration.py``; the docs' KQL in ``tests/infra/test_doc_kql.py``."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared import report
from shared.azure.exemptions import new_exemption
from shared.commands.report import parse_since
from shared.core import layout
from shared.core.errors import NoDataError
from shared.core.keys import resource_key
from shared.core.schema import REPORT_COLUMNS
from shared.report import ReportSource, find_run, latest_finished, runs_since, trend_runs
from shared.report.fixscript import portal_link

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
SUB = "11111111-2222-3333-4444-555555555555"


def row(
    app: str, status: str, *, new: bool = False, slot: str = "", rg: str = "rg-web", **extra: Any
) -> dict[str, Any]:
    rid = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}" + (
        f"/slots/{slot}" if slot else ""
    )
    return {
        "PartitionKey": layout.results_partition("r1", 0),
        "RowKey": rid.lower().replace("/", "|"),
        "RunId": "r1",
        "Status": status,
        "NewFailure": new,
        "SubscriptionId": SUB,
        "ResourceGroup": rg,
        "AppName": app,
        "Slot": slot,
        "Kind": "app,linux",
        "ClientCertMode": "Optional" if status == "FAIL" else "Required",
        "Reason": f"why {app}",
        "Remediation": f"fix {app}" if status != "PASS" else "",
        "ResourceId": rid,
        "AuditedAt": NOW,
        **extra,
    }


ROWS = [
    row("ok", "PASS"),
    row("api", "WARN"),
    row("shop", "FAIL", new=True),
    row("shop", "PASS", slot="staging"),
    row("old", "FAIL"),
    row("legacy", "EXEMPT"),
]


def run_record(i: int, outcome: str = "complete", **counts: int) -> dict[str, Any]:
    return {
        "PartitionKey": "run",
        "RowKey": f"202603{i:02d}T020000Z-abcdef",
        "Outcome": outcome,
        "StartedAt": NOW + timedelta(days=i),
        "NewFailures": counts.pop("new", 0),
        **{f"Count{k}": v for k, v in counts.items()},
    }


def ctx(**kw: Any) -> report.ReportContext:
    kw.setdefault("runs", (run_record(1, PASS=2, FAIL=2),))
    return report.ReportContext(generated_at=NOW, **kw)


# -- filters --------------------------------------------------------------------------------------
def test_filter_matches_case_insensitively_and_by_kind_parts() -> None:
    r = row("jobs", "FAIL", rg="RG-Func", Kind="functionapp,linux")
    assert report.RowFilter(resource_group="rg-func").matches(r)
    assert report.RowFilter(subscription=SUB.upper()).matches(r)
    assert report.RowFilter(kinds=("linux",)).matches(r)
    assert report.RowFilter(kinds=("functionapp", "linux")).matches(r)
    assert not report.RowFilter(kinds=("app",)).matches(r)
    assert not report.RowFilter(statuses=frozenset({"WARN"})).matches(r)
    assert not report.RowFilter(new_only=True).matches(r)
    assert report.RowFilter(resource=r["ResourceId"].upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")).matches(r)


def test_filter_odata_and_description() -> None:
    flt = report.RowFilter(statuses=frozenset({"FAIL", "WARN"}), new_only=True, resource_group="rg")
    assert flt.odata() == "(Status eq 'FAIL' or Status eq 'WARN') and NewFailure eq true"
    assert flt.describe() == "status WARN/FAIL, new failures only, resource group rg"
    assert report.RowFilter().odata() == ""
    assert report.RowFilter().describe() == "all resources"


# -- table ----------------------------------------------------------------------------------------
def test_table_summarises_everything_and_lists_fail_first() -> None:
    out = io.StringIO()
    summary = report.write_table(iter(ROWS), out, ctx())
    text = out.getvalue()
    assert summary.by_status == {"PASS": 2, "WARN": 1, "FAIL": 2, "EXEMPT": 1}
    assert summary.has_fail and summary.new_failures == 1
    assert "run 20260301T020000Z-abcdef (complete" in text
    assert f"  {SUB:<38}       2       1       2       1       0       6" in text
    listing = text.split("FAIL/ERROR/WARN resources: 3\n", 1)[1]
    assert [line.split()[0] for line in listing.splitlines()[1:] if not line.startswith(" ")] == [
        "FAIL",
        "FAIL",
        "WARN",
    ]
    assert "FAIL    new shop" in listing and "why shop" in listing and "Fix: fix shop" in listing
    assert "staging" not in listing and " ok " not in listing  # PASS is counted, not listed


def test_table_with_status_filter_lists_those_and_says_so() -> None:
    out = io.StringIO()
    flt = report.RowFilter(statuses=frozenset({"PASS"}))
    summary = report.write_table((r for r in ROWS if flt.matches(r)), out, ctx(flt=flt))
    assert not summary.has_fail
    assert "Selection: status PASS" in out.getvalue()
    assert "shop/staging" in out.getvalue()


def test_table_shows_expiring_exemptions_and_tag_requests() -> None:
    ex = new_exemption(
        f"/subscriptions/{SUB}/resourceGroups/rg-x", "partner API", "alice", NOW + timedelta(days=3), NOW
    )
    rows = [*ROWS, row("public", "FAIL", ExemptionRequest="marketing site, no PII")]
    out = io.StringIO()
    report.write_table(rows, out, ctx(expiring=(ex,)))
    text = out.getvalue()
    assert "Exemptions expiring within 14 days" in text and "rg-x  (partner API; approved by alice)" in text
    assert "Exemption requests from resource tags (1) - NOT exemptions" in text
    assert "request: marketing site, no PII" in text


def test_nothing_to_act_on() -> None:
    out = io.StringIO()
    summary = report.write_table([row("ok", "PASS")], out, ctx())
    assert not summary.has_fail
    assert "FAIL/ERROR/WARN resources: 0 - nothing to act on." in out.getvalue()


# -- csv / json -----------------------------------------------------------------------------------
def test_csv_has_every_selected_row_and_defuses_formulas() -> None:
    rows = [*ROWS, row("evil", "FAIL", ExemptionRequest='=HYPERLINK("http://x")')]
    out = io.StringIO()
    report.write_csv(rows, out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(parsed) == 7
    assert list(parsed[0]) == list(REPORT_COLUMNS)
    assert parsed[2]["Status"] == "FAIL" and parsed[2]["NewFailure"] == "true" and parsed[0]["NewFailure"] == "false"
    assert parsed[2]["AuditedAt"] == "2026-03-01T02:00:00Z"
    assert parsed[-1]["ExemptionRequest"] == '\'=HYPERLINK("http://x")'


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_defuses_every_formula_start(start: str) -> None:
    """OWASP's list of characters a spreadsheet reads as the start of a formula, each in every
    estate-controlled column (an owner tag, a reason, a request, a group name)."""
    value = f"{start}cmd|' /C calc'!A0"
    hostile = row("evil", "FAIL", Owner=value, Reason=value, ExemptionRequest=value, ResourceGroup=value)
    out = io.StringIO()
    report.write_csv([hostile], out)
    parsed = next(csv.DictReader(io.StringIO(out.getvalue())))
    for column in ("Owner", "Reason", "ExemptionRequest", "ResourceGroup"):
        assert parsed[column] == "'" + value, column
    assert report.csv_cell("plain") == "plain" and report.csv_cell("a=b") == "a=b"  # only a leading one


def test_json_is_one_document_with_summary_last() -> None:
    out = io.StringIO()
    report.write_json(ROWS, out, ctx(flt=report.RowFilter(kinds=("linux",))))
    doc = json.loads(out.getvalue())
    assert list(doc) == ["report", "results", "summary"]
    assert doc["report"]["runs"][0]["runId"] == "20260301T020000Z-abcdef"
    assert doc["report"]["selection"]["kinds"] == ["linux"]
    assert len(doc["results"]) == 6 and doc["results"][2]["NewFailure"] is True
    assert doc["summary"]["byStatus"] == {"PASS": 2, "WARN": 1, "FAIL": 2, "EXEMPT": 1, "ERROR": 0}
    assert doc["summary"]["bySubscription"][SUB]["FAIL"] == 2
    empty = io.StringIO()
    report.write_json([], empty, ctx())
    assert json.loads(empty.getvalue())["results"] == []


class _Sink(io.TextIOBase):
    """Counts what is written and keeps none of it (so memory measures the renderer, not the output)."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, s: str) -> int:
        self.chars += len(s)
        return len(s)


def _many(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield row(f"app-{i:06d}", ("FAIL", "PASS", "WARN", "PASS")[i % 4], new=i % 40 == 0)


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "html"])
def test_100k_rows_stream_in_bounded_memory(fmt: str) -> None:
    sink = _Sink()
    tracemalloc.start()
    try:
        if fmt == "csv":
            summary = report.write_csv(_many(100_000), sink)
        else:
            summary = getattr(report, f"write_{fmt}")(_many(100_000), sink, ctx())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.total == 100_000 and summary.by_status["FAIL"] == 25_000 and summary.new_failures == 2_500
    assert sink.chars > (1_500_000 if fmt == "html" else 5_000_000)  # the output really is large (HTML: 5,000 rows)...
    assert peak < 24 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"  # ...and memory stays small


# -- diff -----------------------------------------------------------------------------------------
def test_diff_reports_changes_appearances_and_disappearances() -> None:
    older = [row("a", "PASS"), row("b", "FAIL"), row("gone", "WARN"), row("same", "FAIL")]
    newer = [row("a", "FAIL"), row("b", "PASS"), row("same", "FAIL"), row("fresh", "FAIL")]
    changes = list(report.diff_rows(older, newer))
    assert [(c.app_name, c.before, c.after, c.kind) for c in changes] == [
        ("a", "PASS", "FAIL", "changed"),
        ("b", "FAIL", "PASS", "changed"),
        ("fresh", "", "FAIL", "appeared"),
        ("gone", "WARN", "", "disappeared"),
    ]
    out = io.StringIO()
    counts = report.write_diff(iter(changes), out, "json", "r1", "r2")
    doc = json.loads(out.getvalue())
    assert doc["from"] == "r1" and len(doc["changes"]) == 4
    assert counts == {"PASS->FAIL": 1, "FAIL->PASS": 1, "-->FAIL": 1, "WARN->-": 1}
    table = io.StringIO()
    report.write_diff(iter(changes), table, "table", "r1", "r2")
    assert "Changes from run r1 to run r2: 4" in table.getvalue()
    assert "PASS   -> FAIL    a" in table.getvalue()


# -- trend chart ----------------------------------------------------------------------------------
def test_trend_svg_draws_a_line_per_status_and_hollow_partial_runs() -> None:
    runs = [run_record(i, "partial" if i == 2 else "complete", PASS=10 * i, FAIL=5 - i) for i in range(1, 5)]
    svg = report.trend_svg(runs)
    assert svg.startswith('<svg id="trend-chart"') and svg.endswith("</svg>")
    assert svg.count("<polyline") == 5 and svg.count("<circle") == 20
    assert svg.count('fill="#fff"') == 5  # the partial run's five markers
    assert ">50<" in svg  # y axis rounded up to 50 for a maximum of 40
    issues = report.trend_svg(runs, report.ISSUE_STATUSES, "x")
    assert ">5<" in issues  # FAIL peaks at 4: its own scale tops out at 5, not at PASS's 50
    assert issues.count("<polyline") == 4
    assert report.trend_svg([]).startswith("<p")


def test_html_lists_the_worst_first_up_to_its_row_limit() -> None:
    rows = [row(f"w{i}", "WARN") for i in range(5)] + [row(f"f{i}", "FAIL", Reason="two\nlines") for i in range(5)]
    out = io.StringIO()
    summary = report.write_html(rows, out, ctx(html_rows=7))
    page = out.getvalue()
    assert summary.total == 10
    assert page.count('<tr class="status-FAIL">') == 5 and page.count('<tr class="status-WARN">') == 2
    assert page.index("status-FAIL") < page.index("status-WARN")
    assert 'id="truncated">The first 7 of 10' in page
    assert 'id="truncated"' not in _html(rows, html_rows=10)


def _in(sub: str, name: str, app: str, status: str, **extra: Any) -> dict[str, Any]:
    base = row(app, status, **extra)
    rid = base["ResourceId"].replace(SUB, sub)
    return {**base, "SubscriptionId": sub, "SubscriptionName": name, "ResourceId": rid, "RowKey": resource_key(rid)}


def test_html_lists_new_failures_then_fail_by_worst_subscription_then_error_then_warn() -> None:
    x, y, z = (f"{c * 8}-0000-4000-8000-000000000000" for c in "abc")
    rows = [  # in table order: by subscription, as the tables return them
        _in(x, "X", "x-fail", "FAIL"),
        _in(x, "X", "x-error", "ERROR"),
        _in(x, "X", "x-pass", "PASS"),
        _in(y, "Y", "y-fail-1", "FAIL"),
        _in(y, "Y", "y-new", "FAIL", new=True),
        _in(y, "Y", "y-warn", "WARN"),
        _in(y, "Y", "y-fail-2", "FAIL"),
        _in(z, "Z", "z-warn", "WARN"),
        _in(z, "Z", "z-fail-1", "FAIL"),
        _in(z, "Z", "z-fail-2", "FAIL", new=True),
    ]
    tenants = {x: "tenant-x", y: "tenant-y"}
    page = _html(rows, tenants=tenants)
    listed = re.findall(r'<a href="([^"]+)">([\w-]+)</a>', page.split('id="findings"', 1)[1])
    assert [name for _, name in listed] == [
        "y-new", "z-fail-2",  # new failures first, worst subscription first (Y: 3 FAIL, Z: 2)
        "y-fail-1", "y-fail-2", "z-fail-1", "x-fail",  # FAIL by worst subscription
        "x-error",
        "y-warn", "z-warn",
    ]
    links = dict((name, href) for href, name in listed)
    assert links["y-new"] == (
        f"https://portal.azure.com/#@tenant-y/resource/subscriptions/{y}/resourceGroups/rg-web/providers/"
        "Microsoft.Web/sites/y-new/configuration"
    )
    assert links["z-warn"].startswith("https://portal.azure.com/#resource/subscriptions/")  # no tenant known
    for r in rows:
        if r["Status"] != "PASS":
            assert f'<code class="id" title="the full resource id: one click selects it">{r["ResourceId"]}</code>' in page
    # cut to 4 rows: the worst four, in that order
    cut = re.findall(r'<a href="[^"]+">([\w-]+)</a>', _html(rows, html_rows=4).split('id="findings"', 1)[1])
    assert cut == ["y-new", "z-fail-2", "y-fail-1", "y-fail-2"]


def test_html_headline_compliance_fixed_and_gone() -> None:
    rows = [
        row("a", "PASS", PreviousStatus="FAIL"),  # fixed
        row("b", "PASS", PreviousStatus="WARN"),  # fixed
        row("c", "PASS", PreviousStatus="PASS"),
        row("d", "EXEMPT"),
        row("e", "FAIL"),
        row("f", "WARN"),
        row("g", "ERROR"),
    ]
    page = _html(rows, runs=({"RowKey": "r1", "Outcome": "complete", "Retired": 3},))
    assert 'id="compliance"><b>67%</b>compliant: 4 of 6 resources pass or are exempt (1 unreadable, not counted)' in page
    assert 'id="count-fixed"><b>2</b>' in page and 'id="count-gone"><b>3</b>' in page
    assert page.index('id="count-NEW"') < page.index('id="count-FAIL"') < page.index('id="count-PASS"')
    summary = report.Summary()
    for r in [row("p", "PASS")] * 999 + [row("f", "FAIL")]:
        summary.add(r)
    assert summary.compliance_percent() == 99.9
    assert "99.9%" in _html([row("p", "PASS")] * 1999 + [row("f", "FAIL")])  # never rounded up to 100%


def _html(rows: list[dict[str, Any]], **kw: Any) -> str:
    out = io.StringIO()
    report.write_html(rows, out, ctx(**kw))
    return out.getvalue()


def test_html_escapes_everything_from_the_estate() -> None:
    hostile = row("x", "FAIL", Reason="<script>alert(1)</script>", ResourceGroup='rg"><img src=x>')
    out = io.StringIO()
    report.write_html([hostile], out, ctx(trend=(run_record(1, PASS=1),)))
    page = out.getvalue()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "default-src 'none'" in page  # CSP: no external loads, no script


class _Attributes(HTMLParser):
    """Every attribute of every start tag, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))


@pytest.mark.parametrize("quote", ['"', "'"])
def test_html_values_in_attributes_cannot_break_out(quote: str) -> None:
    """Ids, links and titles carry estate text inside attributes: a quote must not end the attribute."""
    breakout = f"x{quote} onmouseover={quote}alert(1){quote} data-x={quote}"
    hostile = row(
        f"app{quote}x",
        "FAIL",
        rg=f"rg{quote}><b",
        SubscriptionId=f"sub{breakout}",
        SubscriptionName=f"Prod{breakout}",
        Owner=f"o{breakout}",
    )
    page = _html([hostile], trend=(run_record(1, PASS=1),))
    parser = _Attributes()
    parser.feed(page)
    names = {name for _, attrs in parser.found for name in attrs}
    assert "onmouseover" not in names and "data-x" not in names, "a quote ended an attribute"
    values = [value or "" for _, attrs in parser.found for value in attrs.values()]
    assert portal_link(hostile["ResourceId"]) in values, "the portal link is kept exactly in its href"
    assert any(f"sub{breakout}" == v for v in values), "the subscription id is kept exactly in its title"


# -- choosing runs --------------------------------------------------------------------------------
def test_run_selection() -> None:
    runs = [run_record(1), run_record(2), run_record(3, "partial"), run_record(4, "running")]
    assert latest_finished(runs, "T")["RowKey"] == runs[2]["RowKey"]  # partial counts; running does not
    assert latest_finished(runs[:2], "T")["RowKey"] == runs[1]["RowKey"]
    with pytest.raises(NoDataError, match="No audit run is recorded in table T"):
        latest_finished([], "T")
    with pytest.raises(NoDataError, match=r"latest is .* \(running\)\. Report on it anyway with --run"):
        latest_finished([run_record(4, "running")], "T")
    with pytest.raises(NoDataError, match="No run 'nope'"):
        find_run(runs, "nope", "T")
    assert [r["RowKey"][:8] for r in runs_since(runs, NOW + timedelta(days=2))] == ["20260302", "20260303"]
    assert [r["RowKey"][:8] for r in trend_runs(runs, runs[1], 30)] == ["20260301", "20260302"]
    assert len(trend_runs(runs, runs[2], 2)) == 2


def test_parse_since() -> None:
    assert parse_since("2026-03-01", NOW) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-03-01T01:00:00+01:00", NOW) == datetime(2026, 3, 1, 0, tzinfo=UTC)


# -- ReportSource: the queries of the partition layout ------------------------------------------------
OTHER = "11111111-2222-3333-4444-5555555555ff"  # shares its first 34 characters with SUB


class _Results:
    """A results table that records the filter it was asked and returns every row it holds."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows, self.queries = rows, list[str]()

    def query_entities(self, query: str, results_per_page: int = 1000) -> Iterator[dict[str, Any]]:
        self.queries.append(query)
        return iter(self.rows)


def _source(rows: list[dict[str, Any]]) -> tuple[ReportSource, _Results]:
    results = _Results(rows)
    return ReportSource(SimpleNamespace(results=results)), results  # type: ignore[arg-type]


def _sub_row(subscription: str, app: str, run_id: str = "r1", index: int = 0) -> dict[str, Any]:
    rid = f"/subscriptions/{subscription}/resourceGroups/rg/providers/Microsoft.Web/sites/{app}"
    return {
        **row(app, "FAIL"),
        "PartitionKey": layout.results_partition(run_id, index),
        "RowKey": resource_key(rid),
        "RunId": run_id,
        "SubscriptionId": subscription,
        "ResourceId": rid,
    }


def test_report_source_queries_the_run_range_narrowed_by_row_key() -> None:
    source, results = _source([])
    list(source.results("r1", report.RowFilter()))
    list(source.results("r1", report.RowFilter(subscription=SUB.upper(), statuses=frozenset({"FAIL"}))))
    shop = f"/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Web/sites/Shop"
    list(source.results("r1", report.RowFilter(resource=shop)))
    run = "PartitionKey ge 'r1_' and PartitionKey lt 'r1`'"
    assert results.queries == [
        run,
        f"{run} and RowKey ge '|subscriptions|{SUB}' and RowKey lt '|subscriptions|{SUB}}}' and (Status eq 'FAIL')",
        f"{run} and RowKey eq '{resource_key(shop)}'",
    ]


def test_report_source_keeps_only_the_subscription_asked_for() -> None:
    """The RowKey range admits a longer id with the same start; such rows are dropped client-side."""
    longer = {**_sub_row(SUB, "impostor"), "RowKey": layout.subscription_key_prefix(SUB) + "0|x", "SubscriptionId": SUB}
    rows = [_sub_row(SUB, "shop"), _sub_row(OTHER, "blog"), longer]
    source, _ = _source(rows)
    assert [r["AppName"] for r in source.results("r1", report.RowFilter(subscription=SUB))] == ["shop"]
    assert [r["AppName"] for r in source.results("r1", report.RowFilter())] == ["shop", "blog", "impostor"]


def test_missing_sign_in_is_explained() -> None:
    from azure.core.exceptions import ClientAuthenticationError

    from shared.commands.common import store_error_hint

    assert "az login" in store_error_hint(ClientAuthenticationError("DefaultAzureCredential failed"))


# -- the docs (docs/security-team.md, docs/design.md, README.md) stay true ---------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[2]
SECURITY_DOC = REPO_ROOT / "docs" / "security-team.md"
DOCS = (SECURITY_DOC, REPO_ROOT / "docs" / "design.md", REPO_ROOT / "README.md")


def _blocks(language: str, docs: tuple[Path, ...] = DOCS) -> list[str]:
    """Every fenced block of this language in these docs (the security team's page first)."""
    return [b for doc in docs for b in re.findall(rf"```{language}\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)]


def _doc_commands() -> list[list[str]]:
    """Every ``clientcert-audit ...`` command in the doc's bash blocks, placeholders filled in."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line.startswith("clientcert-audit ") and not line.startswith(".venv/bin/clientcert-audit "):
                continue
            line = re.sub(r"\s+#.*$", "", line).split(" | ")[0]
            line = line.replace("<subscription-id>", SUB)
            commands.append(shlex.split(line)[1:])
    return commands


def test_doc_commands_parse() -> None:
    from shared.cli import build_parser

    commands = _doc_commands()
    assert len(commands) >= 10
    assert any(argv[:2] == ["subscriptions", "retire"] for argv in commands), "security-team.md: subscriptions retire"
    for argv in commands:
        args = build_parser().parse_args(argv)  # argparse exits (fails the test) on anything invalid
        assert args.func is not None
