"""``clientcert-audit report``: rendering of plain rows (unit) and the command against Azurite with
several runs written by the real engine (integration)."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shlex
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared import layout, report
from shared.commands.report import parse_since
from shared.errors import NoDataError
from shared.exemptions import new_exemption
from shared.keys import resource_key
from shared.report import ReportSource, find_run, latest_finished, runs_since, trend_runs
from shared.schema import REPORT_COLUMNS
from tests.emulators.azurite import ACCOUNT_KEY
from tests.reportbed import SUB_A, SUB_B, AuditBed

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
    return report.ReportContext(runs=(run_record(1, PASS=2, FAIL=2),), generated_at=NOW, **kw)


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


# -- against Azurite, with runs written by the real engine ----------------------------------------
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


@pytest.mark.integration
def test_report_source_selects_a_subscription_within_shared_partitions(
    azurite: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two subscriptions in one partition (and one spread over two), next to another run."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite.tls.ca_file))
    rows = [
        _sub_row(SUB, "shop", index=0),
        _sub_row(OTHER, "blog", index=0),
        _sub_row(OTHER, "wiki", index=1),
        _sub_row(SUB, "shop", run_id="r10"),  # "r10_" sorts below the range of run "r1"
        {
            **_sub_row(SUB, "", index=1),
            "RowKey": layout.subscription_key_prefix(SUB),
            "ResourceId": f"/subscriptions/{SUB}",
            "AppName": "scope",
        },
    ]
    with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        table = service.create_table(f"Shared{uuid.uuid4().hex[:8]}")
        for entity in rows:
            table.upsert_entity(entity)
        source = ReportSource(SimpleNamespace(results=table))  # type: ignore[arg-type]
        mine = sorted(r["AppName"] for r in source.results("r1", report.RowFilter(subscription=SUB)))
        theirs = sorted(r["AppName"] for r in source.results("r1", report.RowFilter(subscription=OTHER)))
        everything = list(source.results("r1", report.RowFilter()))
        wiki = list(source.results("r1", report.RowFilter(resource=_sub_row(OTHER, "wiki")["ResourceId"].upper())))
        nothing = list(source.results("r1", report.RowFilter(subscription=SUB, resource=wiki[0]["ResourceId"])))
    assert mine == ["scope", "shop"]
    assert theirs == ["blog", "wiki"]
    assert len(everything) == 4 and {r["RunId"] for r in everything} == {"r1"}
    assert [(r["AppName"], r["PartitionKey"]) for r in wiki] == [("wiki", "r1_00001")]
    assert nothing == []


@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    return AuditBed(azurite, make_arm, monkeypatch)


def _three_runs(bed: AuditBed) -> list[str]:
    """Baseline; then intranet breaks and shop is fixed; then the slot is fixed and blog appears failing."""
    bed.run()
    bed.sites["intranet"].update(client_cert_mode="Optional")
    bed.sites["shop"].update(client_cert_mode="Required")
    bed.run()
    bed.sites["api/staging"].update(client_cert_mode="Required")
    bed.tenant.get_subscription(SUB_B).add_site("rg-dev", "blog", client_cert_enabled=False)  # type: ignore[union-attr]
    bed.run()
    return [s.run_id for s in bed.summaries]


def _csv(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(out)))


@pytest.mark.integration
def test_report_before_any_run_says_so(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = bed.cli(capsys, ["report"])
    assert code == 5 and out == ""
    assert "No audit run is recorded in table Runs" in err and "clientcert-audit run" in err


@pytest.mark.integration
def test_report_formats_filters_history_and_diff(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    run1, run2, run3 = _three_runs(bed)
    expected = {e.id: e.status for e in bed.tenant.expected().values()}  # the oracle, after run 3

    code, out, _ = bed.cli(capsys, ["report", "--format", "csv"])
    assert code == 1  # the selection contains FAIL
    rows = _csv(out)
    assert {r["ResourceId"].lower(): r["Status"] for r in rows} == {k.lower(): v for k, v in expected.items()}
    assert {r["RunId"] for r in rows} == {run3}
    assert [r["AppName"] for r in rows if r["NewFailure"] == "true"] == ["blog"]

    code, out, _ = bed.cli(capsys, ["report"])
    assert code == 1
    assert f"run {run3} (complete" in out
    assert f"  {'Prod (aaaaaaaa)':<38}       3       1       1       0       0       5" in out  # shop, api, slot / portal / jobs
    assert f"  {'Dev (bbbbbbbb)':<38}       0       0       2       0       0       2" in out
    listing = out.split("FAIL/ERROR/WARN resources: 4\n", 1)[1]
    assert "FAIL    new blog" in listing and "intranet" in listing and "jobs" in listing and "portal" in listing
    assert "az webapp update --name jobs --resource-group rg-func" in listing
    assert "shop" not in listing

    code, out, _ = bed.cli(capsys, ["report", "--format", "json", "--status", "WARN"])
    doc = json.loads(out)
    assert code == 0  # no FAIL in this selection: a pipeline gate passes
    assert [r["AppName"] for r in doc["results"]] == ["portal"]
    assert doc["summary"]["byStatus"]["WARN"] == 1 and doc["report"]["runs"][0]["runId"] == run3

    assert [r["AppName"] for r in _csv(bed.cli(capsys, ["report", "--format", "csv", "--new"])[1])] == ["blog"]
    sub_b = _csv(bed.cli(capsys, ["report", "--format", "csv", "--subscription", SUB_B.upper()])[1])
    assert sorted(r["AppName"] for r in sub_b) == ["blog", "intranet"]
    rg_web = _csv(bed.cli(capsys, ["report", "--format", "csv", "--resource-group", "RG-WEB", "--status", "PASS"])[1])
    assert sorted((r["AppName"], r["Slot"]) for r in rg_web) == [("api", ""), ("api", "staging"), ("shop", "")]
    functions = _csv(bed.cli(capsys, ["report", "--format", "csv", "--kind", "functionapp"])[1])
    assert [r["AppName"] for r in functions] == ["jobs"]

    code, out, _ = bed.cli(capsys, ["report", "--format", "csv", "--run", run1])
    assert {r["AppName"] + r["Slot"]: r["Status"] for r in _csv(out)}["shop"] == "FAIL"

    since = (bed.summaries[0].started_at - timedelta(minutes=1)).isoformat()
    shop = bed.site_id("shop")
    code, out, _ = bed.cli(capsys, ["report", "--format", "csv", "--since", since, "--resource", shop])
    assert [(r["RunId"], r["Status"]) for r in _csv(out)] == [(run1, "FAIL"), (run2, "PASS"), (run3, "PASS")]
    assert code == 1
    code, out, _ = bed.cli(capsys, ["report", "--since", since])
    assert "3 runs from" in out and "Run totals" in out and run2 in out

    code, out, _ = bed.cli(capsys, ["report", "--diff", run1, run3, "--format", "json"])
    changes = {(c["AppName"], c["Slot"]): (c["Before"], c["After"]) for c in json.loads(out)["changes"]}
    assert changes == {
        ("shop", ""): ("FAIL", "PASS"),
        ("api", "staging"): ("FAIL", "PASS"),
        ("intranet", ""): ("PASS", "FAIL"),
        ("blog", ""): ("", "FAIL"),
    }
    assert code == 1
    code, out, _ = bed.cli(capsys, ["report", "--diff", run1, run3, "--new", "--format", "csv"])
    assert sorted(r["AppName"] for r in _csv(out)) == ["blog", "intranet"]

    code, _, err = bed.cli(capsys, ["report", "--run", "20000101T000000Z-000000"])
    assert code == 5 and "No run '20000101T000000Z-000000'" in err and run3 in err

    page = tmp_path / "report.html"
    code, out, _ = bed.cli(capsys, ["report", "--format", "html", "-o", str(page)])
    assert code == 1 and f"Wrote {page}" in out and "FAIL 3" in out
    assert page.read_text(encoding="utf-8").count('<polyline class="series') == 9


@pytest.mark.integration
def test_tag_requests_are_listed_never_exempt(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tags = {"shop": {"ClientCert-Exemption": "public storefront, owner bob"}, "api": {"clientcert-exemption": "x"}}
    bed.run(tags=tags)  # the setting is off: the tag is ignored
    code, out, _ = bed.cli(capsys, ["report"])
    assert "Exemption requests" not in out
    monkeypatch.setenv("AUDIT_EXEMPTION_REQUEST_TAG", "clientcert-exemption")
    bed.run(tags=tags)
    code, out, _ = bed.cli(capsys, ["report"])
    assert code == 1
    assert "Exemption requests from resource tags (1) - NOT exemptions" in out
    assert "request: public storefront, owner bob" in out  # api passes: its request is moot
    rows = _csv(bed.cli(capsys, ["report", "--format", "csv", "--resource", bed.site_id("shop")])[1])
    assert rows[0]["Status"] == "FAIL" and rows[0]["ExemptionRequest"] == "public storefront, owner bob"


@pytest.mark.integration
def test_store_errors_are_one_actionable_line(
    bed: AuditBed, azurite: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong_key = azurite.connection_string.replace(ACCOUNT_KEY, base64.b64encode(bytes(64)).decode())
    monkeypatch.setenv("AUDIT_TABLE_CONNECTION_STRING", wrong_key)
    code, out, err = bed.cli(capsys, ["report"])
    assert code == 6 and out == ""
    assert err.startswith("Cannot use the results tables: access denied (") and "Traceback" not in err
    assert "Storage Table Data Reader" in err
    assert bed.cli(capsys, ["exempt", "list"])[0] == 6


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


@pytest.mark.infra
def test_doc_kql_is_valid() -> None:
    from tests.infra.conftest import run_kql_check

    queries = {f"{doc.name} kusto block {i}": q for doc in DOCS for i, q in enumerate(_blocks("kusto", (doc,)))}
    assert len(_blocks("kusto", (SECURITY_DOC,))) >= 4 and len(queries) >= 6
    code, result = run_kql_check("--stdin", stdin=json.dumps(queries))
    assert code == 0 and result["ok"], json.dumps(result, indent=2)


@pytest.mark.integration
def test_doc_odata_filters_run_against_azurite(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    _three_runs(bed)
    shop = bed.site_id("shop")
    bed.cli(capsys, ["exempt", "add", "--scope", shop, "--reason", "r", "--approver", "a", "--expires", "30d"])
    store = bed.store()
    tables = {
        "ClientCertAudit": store.results,
        "ClientCertAuditLatest": store.latest,
        "ClientCertAuditRuns": store.runs,
        "ClientCertAuditExemptions": store.exemptions,
    }
    values = {
        "<RunId>": bed.summaries[-1].run_id,
        "<subscription>": SUB_A,
        "<resource key>": resource_key(shop),
        "<c>": SUB_A[0],
    }
    matched: dict[str, int] = {}
    try:
        for block in _blocks("odata"):
            table = tables[re.search(r"# table: (\w+)", block).group(1)]  # type: ignore[union-attr]
            for line in block.splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                query = line
                for placeholder, value in values.items():
                    query = query.replace(placeholder, value)
                matched[line] = len(list(table.query_entities(query)))  # a malformed filter raises here
    finally:
        store.close()
    assert len(matched) >= 21
    assert matched["PartitionKey ge '<RunId>_' and PartitionKey lt '<RunId>`'"] == 7
    assert matched["PartitionKey ge '<RunId>_' and PartitionKey lt '<RunId>`' and NewFailure eq true"] == 1
    assert matched["PartitionKey ge '<RunId>_' and PartitionKey lt '<RunId>`' and SubscriptionName eq 'Prod'"] == 5
    unowned = "Owner eq '' and (Status eq 'FAIL' or Status eq 'WARN')"
    assert matched[f"PartitionKey ge '<RunId>_' and PartitionKey lt '<RunId>`' and {unowned}"] == 4  # no tags here
    one_sub = "RowKey ge '|subscriptions|<subscription>' and RowKey lt '|subscriptions|<subscription>}'"
    assert matched[f"PartitionKey ge '<RunId>_' and PartitionKey lt '<RunId>`' and {one_sub} and Status eq 'FAIL'"] == 1
    assert matched["PartitionKey ge '<RunId>_' and PartitionKey lt '<RunId>`' and RowKey eq '<resource key>'"] == 1
    assert matched["RowKey eq '<resource key>'"] == 3
    assert matched["Status eq 'FAIL' and Gone eq false"] == 3
    # SUB_A's 5 resources: a small subscription, so all in its bucket and none in own partitions
    assert matched["SubscriptionId eq '<subscription>'"] == 5
    assert matched[f"PartitionKey eq 'bucket-<c>' and {one_sub}"] == 5
    assert matched["PartitionKey ge '<subscription>' and PartitionKey lt '<subscription>~'"] == 0
    assert matched["PartitionKey eq 'run' and Outcome eq 'complete'"] == 3
    assert matched["PartitionKey eq 'exemption'"] == 1
