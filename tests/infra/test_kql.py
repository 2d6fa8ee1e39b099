"""The KQL in infra/: it parses cleanly with Microsoft's Kusto language service, and it matches
exactly the events the code emits (prefixes from shared/events.py, JSON keys of the payloads).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import events
from shared.events import EVENT_LOGGER_NAME, NEW_FAILURE_EVENT, RUN_SUMMARY_EVENT
from tests.infra.bicep_tree import deployed
from tests.infra.conftest import KQL_FILES, rel, run_kql_check

pytestmark = pytest.mark.infra

ALERTS = "infra/app/alerts.bicep"
# Which event each alert rule (Bicep symbol) is about.
RULE_EVENTS = {
    "newFailureAlert": NEW_FAILURE_EVENT,
    "missedRunAlert": RUN_SUMMARY_EVENT,
    "incompleteRunAlert": RUN_SUMMARY_EVENT,
}

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
        "Counts": {"PASS": 10, "WARN": 1, "FAIL": 2, "EXEMPT": 1, "ERROR": 0},
        "Total": 14,
        "NewFailures": 1,
        "SubscriptionsRead": 3,
        "SubscriptionsFailed": 0,
        "DurationSeconds": 12.5,
        "StartedAt": datetime(2026, 1, 1, 2, 0, tzinfo=UTC).isoformat(),
        "EndedAt": datetime(2026, 1, 1, 2, 0, 12, tzinfo=UTC).isoformat(),
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


def emitted(caplog: pytest.LogCaptureFixture, emit: Any, payload: dict[str, Any], **kwargs: Any) -> logging.LogRecord:
    """Call a real emitter from shared.events and return the record it logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=EVENT_LOGGER_NAME):
        emit(payload, **kwargs)
    (record,) = [r for r in caplog.records if r.name == EVENT_LOGGER_NAME]
    return record


# -- the parser ------------------------------------------------------------------------------


def test_every_query_parses_without_diagnostics(alert_queries: dict[str, str]) -> None:
    assert set(alert_queries) == set(RULE_EVENTS), "alert rules and RULE_EVENTS disagree"
    status, report = run_kql_check("--stdin", *(rel(p) for p in KQL_FILES), stdin=json.dumps(alert_queries))
    problems = [
        f"{r['name']}:{d.get('line')}:{d.get('column')}: {d['severity']} {d['code']} {d['message']}"
        for r in report.get("results", [])
        for d in r["diagnostics"]
    ]
    assert status == 0 and report["ok"], "KQL diagnostics:\n" + "\n".join(problems or [json.dumps(report)])
    assert report["checked"] == len(alert_queries) + len(KQL_FILES)


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


# -- the contract with shared/events.py ------------------------------------------------------


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
    assert kql_prefix_filter(alert_queries["missedRunAlert"], message) is None
    assert kql_prefix_filter(alert_queries["incompleteRunAlert"], message) is None


def incomplete_run_where(parsed: dict[str, Any]) -> bool:
    """Python mirror of the incomplete-run rule's filter (its text is pinned below)."""
    failed = parsed.get("SubscriptionsFailed")
    count = len(failed) if isinstance(failed, list) else int(failed or 0)
    return count > 0 or parsed.get("Outcome") != "complete"


def test_emitted_run_summaries_go_through_the_run_rules(
    alert_queries: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    incomplete = alert_queries["incompleteRunAlert"]
    assert '| where SubscriptionsFailed > 0 or Outcome != "complete"' in incomplete
    assert "gettype(e.SubscriptionsFailed)" in incomplete and "Outcome = tostring(e.Outcome)" in incomplete
    cases = [
        (run_summary_payload(), False, False),
        (run_summary_payload(Outcome="partial", Complete=False, SubscriptionsFailed=2), True, True),
        (run_summary_payload(Outcome="failed", Complete=False, SubscriptionsRead=0, Total=0), True, True),
    ]
    for payload, failed_flag, should_alert in cases:
        record = emitted(caplog, events.emit_run_summary, payload, failed=failed_flag)
        message = record.getMessage()
        for rule in ("missedRunAlert", "incompleteRunAlert"):
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
