"""``clientcert-audit report`` against Azurite, with several runs written by the real engine; the
security team's OData filters from the docs run against those tables. Rendering plain rows is in
``tests/unit/test_report.py``."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared import report
from shared.core import layout
from shared.core.keys import resource_key
from shared.report import ReportSource
from tests.emulators.azurite import ACCOUNT_KEY
from tests.reportbed import SUB_A, SUB_B, AuditBed
from tests.unit.test_report import OTHER, SUB, _blocks, _sub_row

# -- against Azurite, with runs written by the real engine ----------------------------------------


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


def test_report_before_any_run_says_so(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = bed.cli(capsys, ["report"])
    assert code == 5 and out == ""
    assert "No audit run is recorded in table Runs" in err and "clientcert-audit run" in err


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
    assert "az functionapp update --resource-group=rg-func --name=jobs " in listing  # jobs is a function app
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
    html = page.read_text(encoding="utf-8")
    assert html.count('<polyline class="series') == 5 and 'id="subscription-chart"' in html  # trend, and the bars


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
