"""The change poll end to end: Resource Graph's resourcechanges, ARM re-reads, change runs, the
watermark, and its faults (gone resources, unreadable subscriptions, throttling, the nightly run)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.azure.changefeed import CHANGES_QUERY
from tests.emulators.faults import FaultRule, Latency, Status
from tests.emulators.tenant import Site, Tenant
from tests.harness import AuditHarness

SUB = "c0c0c0c0-0000-4000-8000-000000000001"
LOCKED = "c0c0c0c0-0000-4000-8000-000000000002"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
RG_PATH = r"/providers/Microsoft\.ResourceGraph/resources$"


class Clock:
    """The tenant's change clock and the audit's clock, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def build(clock: Clock) -> tuple[Tenant, dict[str, Site]]:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    locked = tenant.add_subscription(LOCKED, display_name="locked")
    sites = {
        "app": sub.add_site("rg-a", "app", **REQ),
        "quiet": sub.add_site("rg-a", "quiet", **REQ),
        "doomed": sub.add_site("rg-b", "doomed", **REQ),
        "locked": locked.add_site("rg-l", "locked-app", **REQ),
    }
    sites["slot"] = sites["app"].add_slot("staging", **REQ)
    sites["doomed-slot"] = sites["doomed"].add_slot("qa", **REQ)
    tenant.start_change_log(clock)
    return tenant, sites


def change_runs(h: AuditHarness) -> list[dict[str, Any]]:
    return [r for r in h.runs() if r.get("Kind") == "changes"]


def graph_queries(arm: Any) -> list[str]:
    return [str(q.get("query")) for q in arm.resource_graph_queries]


def test_a_change_is_audited_and_alerted_once_by_the_next_poll(make_arm, harness_factory) -> None:
    clock = Clock(NIGHT)
    tenant, sites = build(clock)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)  # the nightly baseline
    nightly = h.runs()[-1]

    clock.at = NIGHT + timedelta(hours=9)  # 11:00: an owner turns certificates to Allow, another a slot off
    sites["app"].update(client_cert_mode="Optional")
    sites["slot"].update(client_cert_enabled=False)
    h.clear_events()
    before = arm.stats()["by_kind"]
    result = h.poll_at(clock.at + timedelta(minutes=4))
    after = arm.stats()["by_kind"]
    assert result.changes == 2 and result.resources == 2
    # one query, then exactly those resources, one GET each: the slot (no owner tag of its own) takes
    # its owner from its site, which changed too and so was read anyway
    assert result.graph_requests == 1 and result.arm_gets == 2
    assert after["site_get"] - before["site_get"] == 2
    first_since = NIGHT - timedelta(minutes=30)  # no watermark yet: the margin before the baseline
    assert graph_queries(arm)[-1] == CHANGES_QUERY.format(since=first_since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    run = change_runs(h)[-1]
    assert run["Outcome"] == "complete" and run["NewFailures"] == 2 and run["Total"] == 2
    rows = h.rows_by_id(run["RunId"])
    assert set(rows) == {sites["app"].key, sites["slot"].key}
    assert all(r["NewFailure"] and r["RunId"] == run["RunId"] for r in rows.values())
    events = h.new_failure_events()
    assert sorted(e["ResourceId"].lower() for e in events) == sorted([sites["app"].key, sites["slot"].key])
    assert {e["RunId"] for e in events} == {run["RunId"]}
    summaries = h.run_summaries()
    assert [s["Kind"] for s in summaries] == ["changes"]
    state = h.state()
    assert state[sites["app"].key]["LastRunId"] == run["RunId"]
    assert state[sites["quiet"].key]["LastRunId"] == nightly["RunId"], "nothing else is touched"

    # The next poll lists the same changes again (the overlap margin): recognised as handled, they
    # are not read again, and nothing is alerted or written.
    h.clear_events()
    runs_before = len(h.runs())
    gets_before = arm.stats()["by_kind"]["site_get"]
    again = h.poll_at(clock.at + timedelta(minutes=14))
    assert again.changes == 2 and again.already_handled == 2 and again.summary is None
    assert arm.stats()["by_kind"]["site_get"] == gets_before and again.arm_gets == 0
    assert not h.new_failure_events() and len(h.runs()) == runs_before

    # A later change to the same app is a new record: read again.
    clock.at += timedelta(minutes=20)
    sites["app"].update(client_cert_mode="Required")
    third = h.poll_at(clock.at + timedelta(minutes=2))
    assert third.resources == 1 and third.summary is not None
    assert h.rows_by_id(third.summary.run_id)[sites["app"].key]["Status"] == "PASS"

    # The nightly run stays the ground truth and sees nothing new either.
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=1))
    assert not h.new_failure_events()
    assert h.runs()[-1].get("Kind", "nightly") == "nightly"


def test_a_poll_with_no_change_costs_one_query_and_writes_no_run(make_arm, harness_factory) -> None:
    clock = Clock(NIGHT)
    tenant, _ = build(clock)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    runs = len(h.runs())
    queries = len(arm.resource_graph_queries)
    before = arm.stats()["by_kind"]
    clock.at = NIGHT + timedelta(hours=1)
    result = h.poll_at(clock.at)
    after = arm.stats()["by_kind"]
    assert result.changes == 0 and result.graph_requests == 1 and result.arm_gets == 0
    assert len(arm.resource_graph_queries) == queries + 1
    arm_calls = {k: after.get(k, 0) - before.get(k, 0) for k in after if k not in ("token", "resourcegraph")}
    assert not any(arm_calls.values()), arm_calls
    assert len(h.runs()) == runs and not h.run_summaries()[1:]
    assert result.watermark is None, "nothing listed: the watermark (Resource Graph's clock) stays"


def test_deleted_and_unreadable_resources(make_arm, harness_factory) -> None:
    clock = Clock(NIGHT)
    tenant, sites = build(clock)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    clock.at = NIGHT + timedelta(hours=3)
    tenant.subscriptions[0].remove_site(sites["doomed"])  # gone by the time it is read (with its slot)
    sites["locked"].update(client_cert_mode="Optional")  # in a subscription the identity cannot read
    arm.faults.forbid_subscription(LOCKED)
    h.clear_events()
    result = h.poll_at(clock.at + timedelta(minutes=2))
    run = result.summary
    assert run is not None and run.outcome == "partial"
    rows = h.rows_by_id(run.run_id)
    locked_row = rows[sites["locked"].key]
    assert locked_row["Status"] == "ERROR" and "403" in locked_row["Reason"]
    # the ERROR row says what happens: no poll reads it again for this change; the nightly run does
    assert "does not read this resource again" in locked_row["Remediation"]
    assert "nightly run audits it" in locked_row["Remediation"] and "retries automatically" not in locked_row["Remediation"]
    state = h.state()
    # A poll retires nothing, not even what ARM says is deleted: the nightly run, which lists the whole
    # subscription, does (whether a deleted and re-created app is new must not depend on when polls ran).
    assert state[sites["doomed"].key]["Gone"] is False and state[sites["doomed-slot"].key]["Gone"] is False
    assert sites["doomed"].key not in rows, "no row for a resource that is not there"
    assert state[sites["locked"].key]["Gone"] is False and state[sites["locked"].key]["Status"] == "PASS"
    assert state[sites["quiet"].key]["Gone"] is False
    assert not h.new_failure_events()
    arm.faults.clear()
    h.run_at(NIGHT + timedelta(days=1))
    state = h.state()
    assert state[sites["doomed"].key]["Gone"] is True and state[sites["doomed-slot"].key]["Gone"] is True


def test_resource_graph_throttling_and_failure(make_arm, harness_factory) -> None:
    clock = Clock(NIGHT)
    tenant, sites = build(clock)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_RETRY_TOTAL="2")
    h.run_at(NIGHT)
    clock.at = NIGHT + timedelta(hours=2)
    sites["app"].update(client_cert_mode="Optional")
    arm.faults.add(FaultRule(Status(429, retry_after=1), path=RG_PATH, method="POST", times=1))
    h.clear_events()
    result = h.poll_at(clock.at + timedelta(minutes=1))
    assert result.changes == 1 and len(h.new_failure_events()) == 1, "a 429 is waited out and retried"

    # Resource Graph fails for good: the poll fails loudly and the watermark stays where it was.
    sites["quiet"].update(client_cert_mode="Optional")
    arm.faults.add(FaultRule(Status(500), path=RG_PATH, method="POST"))
    h.clear_events()
    with pytest.raises(Exception, match=r"500|Internal"):
        h.poll_at(clock.at + timedelta(minutes=11))
    arm.faults.clear()
    late = h.poll_at(clock.at + timedelta(minutes=21))
    assert late.since <= clock.at, "the failed poll did not move the watermark"
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [sites["quiet"].key]


def test_a_change_that_resource_graph_shows_late_is_still_seen(make_arm, harness_factory) -> None:
    clock = Clock(NIGHT)
    tenant, sites = build(clock)
    arm = make_arm(tenant)
    arm.change_lag_seconds = 8 * 60  # visible 8 minutes after it happened
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    clock.at = NIGHT + timedelta(hours=5)
    sites["app"].update(client_cert_mode="OptionalInteractiveUser")
    h.clear_events()
    clock.at += timedelta(minutes=4)
    first = h.poll_at(clock.at)  # the change is not visible yet; the watermark moves past it anyway
    assert first.changes == 0 and not h.new_failure_events()
    clock.at += timedelta(minutes=10)
    second = h.poll_at(clock.at)  # the overlap margin reaches back before the watermark
    assert second.changes == 1
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [sites["app"].key]


def test_the_poll_never_competes_with_the_nightly_run(make_arm, harness_factory, caplog) -> None:
    caplog.set_level(logging.INFO)  # the skip is an INFO line of the function
    tenant, sites = build(Clock(NIGHT))
    tenant.start_change_log()  # the real clock: the timers run on it
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_timer()  # baseline
    sites["app"].update(client_cert_mode="Optional")
    arm.faults.add(FaultRule(Latency(2.0), path=rf"/subscriptions/{SUB}/providers/Microsoft\.Web/sites$", times=1))
    h.clear_events()
    nightly = threading.Thread(target=h.run_timer)
    nightly.start()
    time.sleep(0.8)  # the nightly run holds the lease
    h.run_changes_timer()  # skipped, not raced
    nightly.join(timeout=60)
    assert not change_runs(h), "the poll did not run while the nightly run held the lease"
    assert any("change poll skipped" in r.getMessage() for r in h.host.kept)
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [sites["app"].key]

    # and the next poll sees the change again, already alerted by the nightly run: nothing twice
    h.clear_events()
    h.run_changes_timer()
    assert change_runs(h) and not h.new_failure_events()
    assert not h.dropped_by_host()


def test_the_nightly_run_waits_for_a_poll_instead_of_skipping(make_arm, harness_factory, monkeypatch) -> None:
    from shared.run import ledger

    monkeypatch.setattr(ledger, "LEASE_WAIT_SECONDS", 0.2)
    tenant, sites = build(Clock(NIGHT))
    tenant.start_change_log()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_timer()
    sites["app"].update(client_cert_mode="Optional")
    arm.faults.add(FaultRule(Latency(2.0), path=rf"/subscriptions/{SUB}/resourceGroups/rg-a/.*/sites/app$", times=1))
    poll = threading.Thread(target=h.run_changes_timer)
    poll.start()
    time.sleep(0.8)  # the poll holds the lease, reading the changed app slowly
    h.run_timer()  # waits for the poll, then runs
    poll.join(timeout=60)
    kinds = [r.get("Kind", "nightly") for r in h.runs()]
    assert kinds.count("nightly") == 2 and kinds.count("changes") == 1
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [sites["app"].key]


def test_off_disables_the_poll() -> None:
    code = "import function_app; print(sorted(f.get_function_name() for f in function_app.app.get_functions()))"
    env = {**os.environ, "AUDIT_CHANGES_SCHEDULE": "off"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "['clientcert_audit']"
    env["AUDIT_CHANGES_SCHEDULE"] = "0 */5 * * * *"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "['clientcert_audit', 'clientcert_changes']"
    env["AUDIT_CHANGES_SCHEDULE"] = "every ten minutes"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "AUDIT_CHANGES_SCHEDULE" in bad.stderr


def test_report_defaults_to_the_nightly_run_and_since_includes_change_runs(
    make_arm, harness_factory, capsys
) -> None:
    import csv
    import io

    from shared.cli import main

    clock = Clock(NIGHT)
    tenant, sites = build(clock)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)
    clock.at = NIGHT + timedelta(hours=2)
    sites["app"].update(client_cert_mode="Optional")
    h.poll_at(clock.at + timedelta(minutes=3))
    change_run = change_runs(h)[-1]["RunId"]

    def report(*args: str) -> list[dict[str, str]]:
        capsys.readouterr()
        main(["report", "--format", "csv", "--status", "PASS,WARN,FAIL,EXEMPT,ERROR", *args])
        return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))

    default = report()
    assert {r["RunId"] for r in default} == {h.runs()[0]["RunId"]}, "the latest nightly run, not the poll's"
    assert len(default) == len(tenant.expected())
    since = report("--since", NIGHT.date().isoformat())
    assert change_run in {r["RunId"] for r in since}
    assert any(r["RunId"] == change_run and r["Status"] == "FAIL" for r in since)
