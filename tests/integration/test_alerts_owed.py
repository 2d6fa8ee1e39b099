"""An alert is owed until it is sent; a row never shows a change the state does not hold.

Sequences across nights with an injected clock: the run that finds a new failure fails at each
step (result rows, state, the alert mark, after the events), and the next run comes 6 h later
(it resumes the same RunId) or 24 h later (a new RunId), or cannot read the subscription. Each
new failure is alerted exactly once, by whichever run gets there, as long as it still fails.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.azure.store import TableStore
from shared.cli import main
from tests.emulators.faults import FaultRule, Status
from tests.emulators.tenant import Site, Tenant
from tests.harness import AuditHarness

SUB = "44444444-4444-4444-8444-444444444444"
NIGHT1 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
NIGHT2 = NIGHT1 + timedelta(days=1)
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}


class Injected(RuntimeError):
    """The fault a test injects (a store failure or a crash)."""


def build() -> tuple[Tenant, dict[str, Site]]:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    sites = {
        "flip": sub.add_site("rg-a", "flip", **REQ),
        "stays": sub.add_site("rg-a", "stays", **REQ),
        "old-fail": sub.add_site("rg-b", "old-fail", client_cert_enabled=False),
    }
    sites["slot"] = sites["stays"].add_slot("staging", **REQ)
    return tenant, sites


def fail_store_step(
    monkeypatch: pytest.MonkeyPatch, h: AuditHarness, step: str
) -> Callable[[str, str], None] | None:
    """Make the run fail at ``step``: 'rows', 'state', 'mark' (store writes) or 'events' (a crash
    right after the events were logged). Returns the checkpoint hook for 'events'."""
    if step == "events":

        def crash(stage: str, _sub: str) -> None:
            if stage == "alerted":
                raise Injected("crash after the events were logged")

        return crash
    fired: list[bool] = []
    if step == "rows":
        real = TableStore.write_batch

        def failing_rows(self: TableStore, table: Any, entities: list[dict[str, Any]]) -> int:
            if table.table_name == h.tables["AUDIT_RESULTS_TABLE"] and not fired:
                fired.append(True)
                raise Injected("store refused the rows write")
            return real(self, table, entities)

        monkeypatch.setattr(TableStore, "write_batch", failing_rows)
        return None
    real_state = TableStore.write_state

    def failing_state(self: TableStore, entities: list[dict[str, Any]]) -> Any:
        mark = any(e.get("AlertSentAt") for e in entities)
        if (mark == (step == "mark")) and not fired:
            fired.append(True)
            raise Injected(f"store refused the {step} write")
        return real_state(self, entities)

    monkeypatch.setattr(TableStore, "write_state", failing_state)
    return None


def alerts(h: AuditHarness) -> Counter[str]:
    return Counter(e["ResourceId"].lower() for e in h.new_failure_events())


@pytest.mark.parametrize("later", [timedelta(hours=6), timedelta(hours=24)], ids=["6h", "24h"])
@pytest.mark.parametrize("step", ["rows", "state", "mark", "events"])
def test_new_failure_alerted_exactly_once_whatever_step_fails(
    step: str, later: timedelta, make_arm, harness_factory, monkeypatch
) -> None:
    tenant, sites = build()
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT1)  # baseline
    sites["flip"].update(client_cert_mode="Optional")
    sites["slot"].update(client_cert_enabled=False)
    new = {sites["flip"].key, sites["slot"].key}
    h.clear_events()

    checkpoint = fail_store_step(monkeypatch, h, step)
    with pytest.raises(Exception, match=r"crash after the events|store refused"):
        h.run_at(NIGHT2, checkpoint)
    failed_run = h.runs()[-1]
    assert failed_run["Outcome"] == "failed"
    sent_first = alerts(h)
    state = h.state()
    if step == "mark":  # the state holds the new failures, each owed until its event is logged
        assert {k for k, r in state.items() if r["AlertPending"]} == new and not sent_first
    if step == "events":
        assert sent_first == Counter(new) and not any(r["AlertPending"] for r in state.values())
    monkeypatch.undo()
    h.apply_env()

    h.clear_events()
    h.run_at(NIGHT2 + later)
    retry = h.runs()[-1]
    assert retry["Outcome"] == "complete"
    assert (retry["RunId"] == failed_run["RunId"]) is (later < timedelta(hours=12)), "resumed within 12 h only"
    total = sent_first + alerts(h)
    assert total == Counter(new), f"each new failure alerted exactly once, got {total}"
    assert not any(r["AlertPending"] for r in h.state().values()), "nothing is owed any more"
    for event in h.new_failure_events():
        # The run that found it is named; the row in that run says NewFailure.
        found = h.rows_by_id(event["RunId"])[event["ResourceId"].lower()]
        assert found["NewFailure"] is True and event["SentByRunId"] == retry["RunId"]
        assert event["Owed"] is (event["RunId"] != retry["RunId"])
    if step == "mark" and later > timedelta(hours=12):  # a new run: not new any more, yet it pays the debt
        rows = h.rows_by_id()
        assert not any(r["NewFailure"] for r in rows.values())
        assert {e["RunId"] for e in h.new_failure_events()} == {failed_run["RunId"]}
        assert h.runs()[-1]["AlertsSent"] == 2 and h.runs()[-1]["NewFailures"] == 0

    h.clear_events()
    h.run_at(NIGHT2 + later + timedelta(days=1))
    assert not h.new_failure_events(), "and never again"


def test_owed_alert_waits_for_a_readable_subscription_and_is_dropped_on_recovery(
    make_arm, harness_factory, monkeypatch
) -> None:
    tenant, sites = build()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT1)
    sites["flip"].update(client_cert_mode="Optional")
    sites["slot"].update(client_cert_mode="OptionalInteractiveUser")
    h.clear_events()
    fail_store_step(monkeypatch, h, "mark")
    with pytest.raises(Exception, match="store refused the mark write"):
        h.run_at(NIGHT2)
    monkeypatch.undo()
    h.apply_env()
    assert not h.new_failure_events()
    owed_before = {k for k, r in h.state().items() if r["AlertPending"]}
    assert owed_before == {sites["flip"].key, sites["slot"].key}

    # The retry cannot read the subscription: nothing is sent, the debt stays.
    rule = arm.faults.forbid_subscription(SUB)
    h.run_at(NIGHT2 + timedelta(hours=6))
    assert not h.new_failure_events()
    assert {k for k, r in h.state().items() if r["AlertPending"]} == owed_before
    arm.faults.remove(rule)

    # Two nights later: the slot was fixed meanwhile (its alert is dropped, and the log says so);
    # the app still fails and its alert goes out, once.
    sites["slot"].update(client_cert_mode="Required")
    h.run_at(NIGHT2 + timedelta(days=2))
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [sites["flip"].key]
    dropped = [r.getMessage() for r in h.host.kept if "dropped the owed NewFailure alert" in r.getMessage()]
    assert len(dropped) == 1 and sites["slot"].id in dropped[0]
    assert not any(r["AlertPending"] for r in h.state().values())


def report_new(h: AuditHarness, capsys: pytest.CaptureFixture[str], run_id: str) -> set[str]:
    capsys.readouterr()
    code = main(["report", "--run", run_id, "--new", "--format", "csv"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    return {row["ResourceId"].lower() for row in csv.DictReader(io.StringIO(out))}


def test_rows_of_a_partly_read_subscription_show_the_stored_state(
    make_arm, harness_factory, capsys
) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    sites = [sub.add_site(f"rg-{i % 3}", f"app-{i:02d}", **REQ) for i in range(9)]
    sites[3].update(client_cert_enabled=False)  # fails from the first night on (rg-0: the first page)
    # another subscription, read in full each night (a run that read none would be blind, not partial)
    tenant.add_subscription("0ff0ff00-0000-4000-8000-000000000002", display_name="other").add_site("rg", "x", **REQ)
    arm = make_arm(tenant, page_size=3)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="0")
    h.run_at(NIGHT1)
    first_failed = h.rows_by_id()[sites[3].key]["FirstFailedAt"]
    assert first_failed

    # Night 2: the site list breaks after its first page; a site of that page now fails too.
    sites[0].update(client_cert_mode="Optional")
    arm.faults.add(FaultRule(Status(500), path=rf"/subscriptions/{SUB}/providers/Microsoft\.Web/sites$", skip=1))
    h.clear_events()
    h.run_at(NIGHT2)
    run = h.runs()[-1]
    rows = h.rows_by_id()
    assert rows[f"/subscriptions/{SUB}"]["Status"] == "ERROR"
    listed = rows[sites[0].key]
    assert listed["Status"] == "FAIL" and listed["NewFailure"] is False, "the state does not hold a new failure"
    assert listed["PreviousStatus"] == "PASS" and listed["FirstFailedAt"] == ""
    old = rows[sites[3].key]
    assert old["NewFailure"] is False and old["PreviousStatus"] == "FAIL" and old["FirstFailedAt"] == first_failed
    assert run["NewFailures"] == 0 == sum(bool(r["NewFailure"]) for r in rows.values())
    assert report_new(h, capsys, run["RunId"]) == set(), "report --new agrees with the run record"
    assert not h.new_failure_events()
    assert h.state()[sites[0].key]["Status"] == "PASS", "state untouched"

    # Night 3, fully read: now it is a new failure, in the rows, the record, the report and an event.
    arm.faults.clear()
    h.run_at(NIGHT2 + timedelta(days=1))
    run = h.runs()[-1]
    rows = h.rows_by_id()
    assert {k for k, r in rows.items() if r["NewFailure"]} == {sites[0].key}
    assert run["NewFailures"] == 1
    assert report_new(h, capsys, run["RunId"]) == {sites[0].key}
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [sites[0].key]
    assert rows[sites[3].key]["FirstFailedAt"] == first_failed
