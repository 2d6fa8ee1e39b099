"""The KQL in infra/: it parses cleanly with Microsoft's Kusto language service, and it matches
exactly the events the code emits (prefixes from shared/core/events.py, JSON keys of the payloads).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.core import events
from shared.core.events import EVENT_LOGGER_NAME, NEW_FAILURE_EVENT, RUN_SUMMARY_EVENT
from tests.infra.bicep_tree import deployed
from tests.infra.conftest import INFRA, KQL_FILES, rel, run_kql_check

ALERTS = "infra/app/alerts.bicep"
# Which event each alert rule (Bicep symbol) is about.
RULE_EVENTS = {
    "newFailureAlert": NEW_FAILURE_EVENT,
    "runDigestAlert": RUN_SUMMARY_EVENT,
    "missedRunAlert": RUN_SUMMARY_EVENT,
    "incompleteRunAlert": RUN_SUMMARY_EVENT,
}
WORKBOOK = INFRA / "app" / "workbook.json"
BEFORE_FIRST_LOG = Path(__file__).resolve().parent / "fixtures" / "kql_schema_before_first_log.json"

NEW_FAILURE_PAYLOAD = {
    "ResourceId": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-web/providers/Microsoft.Web/sites/shop/slots/staging",
    "SubscriptionId": "00000000-0000-0000-0000-000000000001",
    "ResourceGroup": "rg-web",
    "AppName": "shop",
    "Slot": "staging",
    "Kind": "app,linux",
    "ClientCertMode": "Optional",
    "Status": "FAIL",
    "Reason": "Incoming client certificates are optional",
    "RunId": "20260101T020000Z-abc",
}


def run_summary_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "RunId": "20260101T020000Z-abc",
        "Outcome": "complete",
        "Complete": True,
        "Baseline": False,
        "Resumed": False,
        "Counts": {"PASS": 10, "WARN": 1, "FAIL": 2, "EXEMPT": 1, "ERROR": 0},
        "Total": 14,
        "NewFailures": 1,
        "AlertsSent": 1,
        "SubscriptionsRead": 3,
        "SubscriptionsFailed": 0,
        "DurationSeconds": 12.5,
        "StartedAt": datetime(2026, 1, 1, 2, 0, tzinfo=UTC).isoformat(),
        "EndedAt": datetime(2026, 1, 1, 2, 0, 12, tzinfo=UTC).isoformat(),
        "Error": None,
        "Kind": "nightly",
    }
    payload.update(changes)
    return payload


@pytest.fixture(scope="module")
def alert_queries(bicep_trees: dict[str, Any]) -> dict[str, str]:
    """``{rule symbol: KQL}`` for every scheduled query rule in the templates."""
    queries: dict[str, str] = {}
    for rule in deployed(bicep_trees, "Microsoft.Insights/scheduledQueryRules"):
        for i, criterion in enumerate(rule.properties["criteria"]["allOf"]):
            query = criterion["query"]
            assert isinstance(query, str) and query.strip(), f"{rule.symbol}: query is not a literal string"
            queries[rule.symbol if i == 0 else f"{rule.symbol}[{i}]"] = query
    return queries


@pytest.fixture(scope="module")
def workbook_queries() -> dict[str, str]:
    """``{item name: KQL}`` for every query item of the workbook."""
    data = json.loads(WORKBOOK.read_text())
    return {f"workbook:{item['name']}": item["content"]["query"] for item in data["items"] if item["type"] == 3}


def emitted(caplog: pytest.LogCaptureFixture, emit: Any, payload: dict[str, Any], **kwargs: Any) -> logging.LogRecord:
    """Call a real emitter from shared.core.events and return the record it logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        emit(payload, **kwargs)
    (record,) = [r for r in caplog.records if r.name == EVENT_LOGGER_NAME]
    return record


# -- the parser ------------------------------------------------------------------------------


def test_every_query_parses_without_diagnostics(
    alert_queries: dict[str, str], workbook_queries: dict[str, str]
) -> None:
    assert set(alert_queries) == set(RULE_EVENTS), "alert rules and RULE_EVENTS disagree"
    queries = {**alert_queries, **workbook_queries}
    status, report = run_kql_check("--stdin", *(rel(p) for p in KQL_FILES), stdin=json.dumps(queries))
    problems = [
        f"{r['name']}:{d.get('line')}:{d.get('column')}: {d['severity']} {d['code']} {d['message']}"
        for r in report.get("results", [])
        for d in r["diagnostics"]
    ]
    assert status == 0 and report["ok"], "KQL diagnostics:\n" + "\n".join(problems or [json.dumps(report)])
    assert report["checked"] == len(queries) + len(KQL_FILES)


def test_the_checker_is_schema_aware_and_fails_on_errors() -> None:
    bad = {
        "column typo": 'AppTraces | where Mesage startswith_cs "x"',
        "table typo": "AppTrace | take 1",
        "syntax": "AppTraces | wher Message == 1",
    }
    status, report = run_kql_check("--stdin", stdin=json.dumps(bad))
    assert status == 1 and report["ok"] is False
    by_name = {r["name"]: r["diagnostics"] for r in report["results"]}
    assert all(by_name[name] for name in bad), f"a broken query passed: {by_name}"
    assert any("Mesage" in d["message"] for d in by_name["column typo"])


# -- the contract with shared/core/events.py ------------------------------------------------------


def test_each_rule_matches_exactly_its_event_prefix(alert_queries: dict[str, str]) -> None:
    for symbol, query in alert_queries.items():
        prefix = RULE_EVENTS[symbol]
        filters = re.findall(r'Message\s+startswith_cs\s+"([^"]*)"', query)
        assert filters == [f"{prefix} "], f'{symbol} must filter on Message startswith_cs "{prefix} ": {filters}'
        for literal in re.findall(r'strlen\("([^"]*)"\)', query):
            assert literal == f"{prefix} ", f"{symbol} strips {literal!r}, not the prefix it filters on"
        other = {NEW_FAILURE_EVENT, RUN_SUMMARY_EVENT} - {prefix}
        assert not any(o in query for o in other)


def test_example_queries_use_the_same_prefixes() -> None:
    for path in KQL_FILES:
        query = path.read_text()
        for literal in re.findall(r'(?:startswith_cs|strlen\()\s*"([^"]*)"', query):
            assert literal in (f"{NEW_FAILURE_EVENT} ", f"{RUN_SUMMARY_EVENT} "), (
                f"{rel(path)}: unknown prefix {literal!r}"
            )


def kql_prefix_filter(query: str, message: str) -> dict[str, Any] | None:
    """Python mirror of the alert queries' first two steps, driven by the literals in ``query``:
    ``where Message startswith_cs "<p>"`` then ``parse_json(substring(Message, strlen("<p>")))``."""
    (prefix,) = re.findall(r'Message\s+startswith_cs\s+"([^"]*)"', query)
    if not message.startswith(prefix):
        return None
    strip = re.findall(r'strlen\("([^"]*)"\)', query)
    parsed = json.loads(message[len(strip[0]) :] if strip else "{}")
    return parsed if isinstance(parsed, dict) else None


def referenced_fields(query: str) -> set[str]:
    """The JSON paths a query reads from the parsed event: e.Foo, e.Counts.PASS, ..."""
    return set(re.findall(r"\be\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", query))


def resolve(payload: dict[str, Any], path: str) -> bool:
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_emitted_new_failure_goes_through_the_new_failure_rule(
    alert_queries: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    record = emitted(caplog, events.emit_new_failure, NEW_FAILURE_PAYLOAD)
    assert record.levelno == logging.WARNING  # AppTraces SeverityLevel 2
    message = record.getMessage()
    parsed = kql_prefix_filter(alert_queries["newFailureAlert"], message)
    assert parsed == NEW_FAILURE_PAYLOAD
    missing = {f for f in referenced_fields(alert_queries["newFailureAlert"]) if not resolve(parsed, f)}
    assert not missing, f"the new-failure rule reads fields the event does not have: {missing}"
    # ... and is not mistaken for a run summary.
    for rule in ("runDigestAlert", "missedRunAlert", "incompleteRunAlert"):
        assert kql_prefix_filter(alert_queries[rule], message) is None


def incomplete_run_where(parsed: dict[str, Any]) -> bool:
    """Python mirror of the incomplete-run rule's filter (its text is pinned below)."""
    failed = parsed.get("SubscriptionsFailed")
    count = len(failed) if isinstance(failed, list) else int(failed or 0)
    return count > 0 or parsed.get("Outcome") != "complete"


def digest_where(parsed: dict[str, Any]) -> bool:
    """Python mirror of the digest rule's filter (its text is pinned below)."""
    return max(int(parsed.get("NewFailures") or 0), int(parsed.get("AlertsSent") or 0)) > 0


def test_emitted_run_summaries_go_through_the_run_rules(
    alert_queries: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    incomplete = alert_queries["incompleteRunAlert"]
    assert '| where SubscriptionsFailed > 0 or Outcome != "complete"' in incomplete
    assert "gettype(e.SubscriptionsFailed)" in incomplete and "Outcome = tostring(e.Outcome)" in incomplete
    digest = alert_queries["runDigestAlert"]
    assert "| extend NewFailures = max_of(tolong(e.NewFailures), tolong(e.AlertsSent))\n| where NewFailures > 0" in digest
    cases = [
        (run_summary_payload(), False, False),
        (run_summary_payload(Outcome="partial", Complete=False, SubscriptionsFailed=2), True, True),
        (run_summary_payload(Outcome="failed", Complete=False, SubscriptionsRead=0, Total=0), True, True),
        # a run that read no subscription (nothing listed: no subscription failed either) is never a pass
        (
            run_summary_payload(
                Outcome="blind",
                Complete=False,
                SubscriptionsRead=0,
                SubscriptionsFailed=0,
                Total=1,
                NewFailures=0,
                AlertsSent=0,
                Counts={"PASS": 0, "WARN": 0, "FAIL": 0, "EXEMPT": 0, "ERROR": 1},
            ),
            True,
            True,
        ),
    ]
    assert [digest_where(p) for p, _, _ in cases] == [True, True, True, False]
    assert digest_where(run_summary_payload(NewFailures=0, AlertsSent=0)) is False
    assert digest_where(run_summary_payload(NewFailures=0, AlertsSent=3)) is True, "owed alerts sent later"
    for payload, failed_flag, should_alert in cases:
        record = emitted(caplog, events.emit_run_summary, payload, failed=failed_flag)
        message = record.getMessage()
        for rule in ("runDigestAlert", "missedRunAlert", "incompleteRunAlert"):
            parsed = kql_prefix_filter(alert_queries[rule], message)
            assert parsed is not None, f"{rule} does not see the RunSummary event"
            if "parse_json(" in alert_queries[rule]:
                assert parsed == payload, f"{rule} does not parse the RunSummary JSON"
            missing = {f for f in referenced_fields(alert_queries[rule]) if not resolve(parsed, f)}
            assert not missing, f"{rule} reads fields the event does not have: {missing}"
        assert incomplete_run_where(payload) is should_alert
        assert kql_prefix_filter(alert_queries["newFailureAlert"], message) is None


def test_example_queries_read_only_fields_the_events_have() -> None:
    samples = {NEW_FAILURE_EVENT: NEW_FAILURE_PAYLOAD, RUN_SUMMARY_EVENT: run_summary_payload()}
    for path in KQL_FILES:
        query = path.read_text()
        prefixes = [p for p in samples if f'"{p} "' in query]
        if not prefixes:
            continue
        (prefix,) = prefixes
        missing = {f for f in referenced_fields(query) if not resolve(samples[prefix], f)}
        assert not missing, f"{rel(path)} reads fields {prefix} does not have: {missing}"


def test_other_log_lines_of_the_app_do_not_match(alert_queries: dict[str, str]) -> None:
    # Lines function_app.py logs around a run must never count as events.
    for line in (
        "ClientCertAudit run 20260101T020000Z-abc complete: FAIL 2, PASS 10; 1 new failures",
        "ClientCertAudit timer is past due; running now",
        "ClientCertAudit skipped: run x holds the audit lease",
        f"{NEW_FAILURE_EVENT}Extra {{}}",
        f"{RUN_SUMMARY_EVENT.lower()} {{}}",
    ):
        for rule, query in alert_queries.items():
            assert kql_prefix_filter(query, line) is None, f"{rule} matches an unrelated log line: {line!r}"


# -- before the first log: AppTraces does not exist ------------------------------------------


def describe(queries: dict[str, str], *schema: str) -> dict[str, dict[str, Any]]:
    _, report = run_kql_check("--describe", *schema, "--stdin", stdin=json.dumps(queries))
    assert "results" in report, report
    return {r["name"]: r for r in report["results"]}


def test_every_alert_and_workbook_query_is_total_without_apptraces(
    alert_queries: dict[str, str], workbook_queries: dict[str, str]
) -> None:
    # In a workspace without AppTraces the only finding may be the fuzzy union's warning that
    # it will drop that leg (KS205); an error (KS204, unknown table) is what fails a rule.
    results = describe({**alert_queries, **workbook_queries}, "--schema", str(BEFORE_FIRST_LOG))
    for name, result in results.items():
        assert result["diagnostics"], f"{name}: the schema fixture still has AppTraces?"
        codes = {(d["severity"], d["code"]) for d in result["diagnostics"]}
        assert codes == {("Warning", "KS205")}, f"{name} fails without AppTraces: {result['diagnostics']}"
        assert result["fuzzyMissing"] == ["AppTraces"]
        assert result["datatables"] and all(d["rows"] == 0 for d in result["datatables"]), name


def test_missed_run_query_returns_zero_runs_without_apptraces(
    alert_queries: dict[str, str], bicep_trees: dict[str, Any]
) -> None:
    query = alert_queries["missedRunAlert"]
    (result,) = describe({"missed": query}, "--schema", str(BEFORE_FIRST_LOG)).values()
    # What the engine runs: the fuzzy union drops the AppTraces leg, leaving only datatable legs.
    assert result["fuzzyMissing"] == ["AppTraces"]
    remaining_rows = sum(d["rows"] for d in result["datatables"])
    # The last operator is a summarize without a by clause: exactly one output row, whose
    # count() over the remaining rows is the value of Runs.
    last = result["last"]
    assert last["kind"] == "SummarizeOperator" and last["byClause"] is None
    assert last["aggregates"] == ["Runs = count()"]
    assert result["columns"] == [{"name": "Runs", "type": "long"}]
    runs = remaining_rows  # count() of the remaining (empty) input
    assert runs == 0
    # ... and the rule fires on it: Total of Runs LessThan 1.
    (rule,) = [
        r for r in deployed(bicep_trees, "Microsoft.Insights/scheduledQueryRules") if r.symbol == "missedRunAlert"
    ]
    (criterion,) = rule.properties["criteria"]["allOf"]
    assert (criterion["metricMeasureColumn"], criterion["operator"]) == ("Runs", "LessThan")
    assert runs < criterion["threshold"], "a deployment that never ran must fire 'did not run'"


def test_without_the_fuzzy_union_the_same_query_would_fail(alert_queries: dict[str, str]) -> None:
    # The contrast that makes the previous tests meaningful: plain AppTraces is an error there.
    plain = alert_queries["missedRunAlert"].replace("union isfuzzy=true", "union")
    (result,) = describe({"plain": plain}, "--schema", str(BEFORE_FIRST_LOG)).values()
    assert ("Error", "KS204") in {(d["severity"], d["code"]) for d in result["diagnostics"]}


def test_rule_dimensions_and_measures_are_result_columns(
    alert_queries: dict[str, str], bicep_trees: dict[str, Any]
) -> None:
    results = describe(alert_queries)
    for rule in deployed(bicep_trees, "Microsoft.Insights/scheduledQueryRules"):
        (criterion,) = rule.properties["criteria"]["allOf"]
        columns = {c["name"]: c["type"] for c in results[rule.symbol]["columns"]}
        for dimension in criterion.get("dimensions", []):
            assert columns.get(dimension["name"]) == "string", f"{rule.symbol}: dimension {dimension['name']}"
        measure = criterion.get("metricMeasureColumn")
        if measure:
            assert columns.get(measure) in ("long", "int", "real"), f"{rule.symbol}: measure {measure}"


# -- the workbook ----------------------------------------------------------------------------


def test_workbook_json_is_a_workbook_over_the_workspace(workbook_queries: dict[str, str]) -> None:
    data = json.loads(WORKBOOK.read_text())
    assert data["version"] == "Notebook/1.0"
    assert data["fallbackResourceIds"] == ["__WORKSPACE_ID__"]
    names = [item["name"] for item in data["items"]]
    assert len(names) == len(set(names)), "item names must be unique"
    for item in data["items"]:
        assert item["type"] in (1, 3), item["name"]
        if item["type"] == 3:
            content = item["content"]
            assert content["version"] == "KqlItem/1.0" and content["queryType"] == 0
            assert content["resourceType"] == "microsoft.operationalinsights/workspaces"
            assert content["visualization"] in {"table", "timechart", "linechart", "barchart", "tiles"}
            assert content["title"].strip()
    assert set(workbook_queries) == {
        "workbook:run-health-last",
        "workbook:status-trend",
        "workbook:new-failures",
        "workbook:run-health-runs",
    }


def test_workbook_shows_what_the_issue_asks(workbook_queries: dict[str, str]) -> None:
    results = describe(workbook_queries)
    columns = {name: {c["name"] for c in r["columns"]} for name, r in results.items()}
    assert {"TimeGenerated", "PASS", "WARN", "FAIL", "EXEMPT", "ERROR"} <= columns["workbook:status-trend"]
    assert {"RunId", "AppName", "Slot", "ClientCertMode", "Reason", "ResourceId"} <= columns["workbook:new-failures"]
    health = columns["workbook:run-health-runs"]
    assert {"RunId", "Outcome", "Partial", "DurationSeconds", "SubscriptionsFailed"} <= health
    assert {"LastRun", "HoursAgo", "Outcome", "DurationSeconds", "SubscriptionsFailed"} <= columns[
        "workbook:run-health-last"
    ]


def test_workbook_queries_use_the_event_contract(workbook_queries: dict[str, str]) -> None:
    samples = {NEW_FAILURE_EVENT: NEW_FAILURE_PAYLOAD, RUN_SUMMARY_EVENT: run_summary_payload()}
    for name, query in workbook_queries.items():
        (prefix,) = [p for p in samples if f'"{p} "' in query]
        assert re.findall(r'Message\s+startswith_cs\s+"([^"]*)"', query) == [f"{prefix} "], name
        assert re.findall(r'strlen\("([^"]*)"\)', query) == [f"{prefix} "], name
        missing = {f for f in referenced_fields(query) if not resolve(samples[prefix], f)}
        assert not missing, f"{name} reads fields {prefix} does not have: {missing}"


def test_the_sample_run_summary_is_the_engines() -> None:
    """The payloads these tests feed the queries have exactly the fields the engine logs."""
    from shared.run.ledger import RunSummary

    assert set(run_summary_payload()) == set(RunSummary("r", datetime.now(UTC)).event())
