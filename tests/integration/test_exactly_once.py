"""Exactly once, whichever run sees it first: the ten sequences of issue 19, each end to end.

Each ``test_seqNN_*`` reproduces sequence NN of the issue with the real timer functions (through
``tests/harness.py``), the ARM emulator and Azurite, and asserts what must hold: every new failure
alerted exactly once, and the rows agreeing with the alerts. Each failed on the code as it was when
the issue was taken (main at 720189d). The model-based test (``test_model_exactly_once.py``)
explores the interleavings these sequences are examples of.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient, UpdateMode

from shared.azure.store import TableStore
from shared.core.keys import encode_key, resource_key
from shared.core.names import fold
from tests.emulators.tenant import ResourceChange, Site, Tenant
from tests.harness import AuditHarness

SUB = "a1b2c3d4-0000-4000-8000-000000000019"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


class Clock:
    """The tenant's change clock, moved by the test (the audit's own clock is passed per run)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def app_broken_after_baseline(
    make_arm: Any, harness_factory: Any, *others: str, **env: str
) -> tuple[AuditHarness, Any, Site, Clock]:
    """What most sequences start from: a tenant with one site ``app`` (and ``others`` beside it in
    its group), its change log on a test :class:`Clock`, the baseline night (with ``env`` applied),
    then the app broken (*Allow*) at 11:00, ``clock.at``. Returns ``(h, arm, app, clock)``."""
    clock = Clock(NIGHT)
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-a", "app", **REQ)
    for name in others:
        sub.add_site("rg-a", name, **REQ)
    tenant.start_change_log(clock)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(**env)
    h.run_at(NIGHT)  # the baseline
    clock.at = NIGHT + timedelta(hours=9)
    app.update(client_cert_mode="Optional")
    return h, arm, app, clock


def alerts(h: AuditHarness) -> Counter[str]:
    return Counter(fold(e["ResourceId"]) for e in h.new_failure_events())


def legacy_key(resource_id: str) -> str:
    """The RowKey an older version gave an id: ``lower()`` of it, made safe for Table keys."""
    return encode_key(resource_id.strip().lower().rstrip("/"))


def rows_of(h: AuditHarness, run_id: str) -> list[dict[str, Any]]:
    return h.rows(run_id)


def state_rows(h: AuditHarness) -> list[dict[str, Any]]:
    return h.table("AUDIT_LATEST_TABLE")


def refuse_state_writes(monkeypatch: pytest.MonkeyPatch, h: AuditHarness, refuse: Any, message: str) -> None:
    """Make the store refuse the state writes ``refuse(entities)`` picks, raising ``message``. The
    state is written by ``TableStore.write_state``; the code before issue 19 wrote it through
    ``write_batch`` to the state table, and these tests also reproduce the issue on that code."""
    if hasattr(TableStore, "write_state"):
        real = TableStore.write_state

        def refused(self: TableStore, entities: list[dict[str, Any]]) -> Any:
            if refuse(entities):
                raise RuntimeError(message)
            return real(self, entities)

        monkeypatch.setattr(TableStore, "write_state", refused)
        return
    real_batch = TableStore.write_batch

    def refused_batch(self: TableStore, table: Any, entities: list[dict[str, Any]]) -> Any:
        if table.table_name == h.tables["AUDIT_LATEST_TABLE"] and refuse(entities):
            raise RuntimeError(message)
        return real_batch(self, table, entities)

    monkeypatch.setattr(TableStore, "write_batch", refused_batch)


def fail_state_tidy(monkeypatch: pytest.MonkeyPatch, h: AuditHarness, deletes: list[int]) -> None:
    """Make the deletion of old copies of state rows fail (counting the attempts in ``deletes``),
    on this code (``delete_state_copies``) and on the code before issue 19 (``delete_keys``)."""
    from azure.core.exceptions import ServiceRequestError

    if hasattr(TableStore, "delete_state_copies"):

        def failing(self: TableStore, copies: Any) -> Any:
            deletes.append(len(list(copies)))
            raise ServiceRequestError("connection reset while deleting the old copies")

        monkeypatch.setattr(TableStore, "delete_state_copies", failing)
        return
    real = TableStore.delete_keys

    def failing_keys(self: TableStore, table: Any, keys: Any) -> Any:
        if table.table_name == h.tables["AUDIT_LATEST_TABLE"]:
            deletes.append(len(list(keys)))
            raise ServiceRequestError("connection reset while deleting the old copies")
        return real(self, table, keys)

    monkeypatch.setattr(TableStore, "delete_keys", failing_keys)


def assert_rows_agree_with_alerts(h: AuditHarness) -> None:
    """For every NewFailure event, the row of its RunId shows NewFailure and its FirstFailedAt."""
    for event in h.new_failure_events():
        rows = [r for r in rows_of(h, event["RunId"]) if fold(r["ResourceId"]) == fold(event["ResourceId"])]
        assert len(rows) == 1, f"one row of {event['ResourceId']} in run {event['RunId']}, got {len(rows)}"
        assert rows[0]["NewFailure"] is True, (event, rows[0])
        assert rows[0]["FirstFailedAt"] == event["FirstFailedAt"], (event, rows[0])


# -- 1: two casings of one subscription id in the change feed ------------------------------------------
def test_seq01_two_casings_of_one_subscription_in_the_change_feed_are_one_subscription(
    make_arm, harness_factory
) -> None:
    h, arm, app, clock = app_broken_after_baseline(make_arm, harness_factory, "quiet")
    changes = arm.tenant.changes
    # The same change, written again by another writer that spells the subscription in upper case.
    last = changes[-1]
    upper = last.target_id.replace(SUB, SUB.upper())
    changes.append(ResourceChange(last.timestamp, upper, last.target_type, "Update", "x"))
    h.clear_events()
    result = h.poll_at(clock.at + timedelta(minutes=3))

    assert result.resources == 1, "one resource, however its subscription is spelled"
    run = [r for r in h.runs() if r.get("Kind") == "changes"][-1]
    assert (run["NewFailures"], run["Total"], run["SubscriptionsRead"]) == (1, 1, 1)
    assert [fold(r["ResourceId"]) for r in rows_of(h, run["RunId"])] == [fold(app.id)]
    assert alerts(h) == Counter({fold(app.id): 1})
    assert_rows_agree_with_alerts(h)


# -- 8: ids folded with str.lower() ----------------------------------------------------------------------
def test_seq08_a_group_upper_cased_by_one_route_is_one_group(make_arm, harness_factory) -> None:
    """``rg-µsvc`` upper-cased (``RG-ΜSVC``, a capital mu) by the group list is the same group to ARM;
    ``lower()`` made it ``rg-μsvc``, another key than the site list's ``rg-µsvc``."""
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-µsvc", "app", id_casing="upper-rg", **REQ)
    slot = app.add_slot("staging", **REQ)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)
    baseline = h.rows()
    assert len(baseline) == 2, [r["ResourceId"] for r in baseline]

    app.update(client_cert_mode="Optional")
    slot.update(client_cert_enabled=False)
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=1))
    rows = h.rows()
    assert sorted(fold(r["ResourceId"]) for r in rows) == sorted([fold(app.id), fold(slot.id)])
    assert alerts(h) == Counter({fold(app.id): 1, fold(slot.id): 1})
    assert len(state_rows(h)) == 2
    assert_rows_agree_with_alerts(h)


def test_seq08_a_group_spelled_with_the_kelvin_sign_is_another_group(make_arm, harness_factory) -> None:
    """``rg-Kiosk`` with U+212A KELVIN SIGN is not ``rg-kiosk`` to ARM: it neither shares its keys
    nor inherits its exemption, although ``lower()`` makes the two one name."""
    from shared.azure.exemptions import new_exemption
    from shared.core.schema import exemption_row

    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    plain = sub.add_site("rg-kiosk", "web", **REQ)
    kelvin = sub.add_site("rg-\u212aiosk", "web", **REQ)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)
    assert len(h.rows()) == 2, "two resources ARM keeps apart: two rows"

    exemption = new_exemption(
        f"/subscriptions/{SUB}/resourceGroups/rg-kiosk", "kiosk pilot", "sec-lead", NIGHT + timedelta(days=30), NIGHT
    )
    with TableServiceClient.from_connection_string(h.azurite.connection_string) as svc:
        svc.get_table_client(h.tables["AUDIT_EXEMPTIONS_TABLE"]).upsert_entity(exemption_row(exemption))
    plain.update(client_cert_mode="Optional")
    kelvin.update(client_cert_mode="Optional")
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=1))
    rows = {fold(r["ResourceId"]): r for r in h.rows()}
    assert rows[fold(plain.id)]["Status"] == "EXEMPT"
    assert rows[fold(kelvin.id)]["Status"] == "FAIL", "the exemption of rg-kiosk does not cover rg-\u212aiosk"
    assert alerts(h) == Counter({fold(kelvin.id): 1})
    assert_rows_agree_with_alerts(h)


def test_state_stored_under_an_older_versions_key_is_adopted(make_arm, harness_factory, monkeypatch) -> None:
    """A table an older version wrote keyed ids by ``lower()``: for an id with a micro sign that key
    is not today's. The row is found by its ``ResourceId`` and adopted, by the nightly run and by a
    poll: its streak kept, its owed alert sent once, never a new failure; the old-key copy deleted."""
    clock = Clock(NIGHT)
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    owed = sub.add_site("rg-µsvc", "owed", **REQ)
    streak = sub.add_site("rg-µsvc", "streak", client_cert_enabled=False)
    polled = sub.add_site("rg-µsvc", "polled", client_cert_enabled=False)
    tenant.start_change_log(clock)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)  # baseline: streak and polled fail from the start
    owed.update(client_cert_mode="Optional")

    # Night 2 finds owed failing but dies before its alert is marked: the alert is owed.
    refuse_state_writes(
        monkeypatch, h, lambda rows: any(r.get("AlertSentAt") for r in rows), "store refused the mark write"
    )
    h.clear_events()
    with pytest.raises(Exception, match="refused the mark"):
        h.run_at(NIGHT + timedelta(days=1))
    monkeypatch.undo()
    h.apply_env()
    night2 = h.runs()[-1]["RunId"]
    assert not h.new_failure_events()

    # The table as an older version left it: every row under lower() of its id.
    before = {fold(r["ResourceId"]): r for r in state_rows(h)}
    _rekey_as_older_version(h)
    assert {r["RowKey"] for r in state_rows(h)} == {legacy_key(r["ResourceId"]) for r in before.values()}
    assert all(legacy_key(r["ResourceId"]) != resource_key(r["ResourceId"]) for r in before.values())

    # A poll first (past the failed run's resume window, so it does not leave that run's rows to a
    # resume): it lists the change of owed (made before night 2) and of polled, finds both under their
    # old keys, sends the owed alert once (owed still fails), and nothing is new.
    clock.at = NIGHT + timedelta(days=1, hours=13)
    polled.update(tags={"owner": "team-µ"})
    h.clear_events()
    h.poll_at(clock.at + timedelta(minutes=2))
    change_run = [r for r in h.runs() if r.get("Kind") == "changes"][-1]
    assert change_run["NewFailures"] == 0
    assert alerts(h) == Counter({fold(owed.id): 1}) and h.new_failure_events()[0]["RunId"] == night2
    polled_row = next(r for r in rows_of(h, change_run["RunId"]) if fold(r["ResourceId"]) == fold(polled.id))
    assert polled_row["FirstFailedAt"] == before[fold(polled.id)]["FirstFailedAt"]
    assert_rows_agree_with_alerts(h)

    # The nightly run adopts the rest: nothing owed any more, nothing new, streaks kept.
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=2))
    assert not h.new_failure_events()
    rows = {fold(r["ResourceId"]): r for r in h.rows()}
    assert not any(r["NewFailure"] for r in rows.values())
    for site in (streak, polled, owed):
        assert rows[fold(site.id)]["FirstFailedAt"] == before[fold(site.id)]["FirstFailedAt"], site
    after = state_rows(h)
    assert sorted(r["RowKey"] for r in after) == sorted(resource_key(r["ResourceId"]) for r in after)
    assert len(after) == 3, "one row per resource: the old-key copies are deleted"
    assert not any(r["AlertPending"] for r in after)


def _rekey_as_older_version(h: AuditHarness) -> None:
    with TableServiceClient.from_connection_string(h.azurite.connection_string) as svc:
        table = svc.get_table_client(h.tables["AUDIT_LATEST_TABLE"])
        for row in list(table.list_entities()):
            old = legacy_key(row["ResourceId"])
            if old == row["RowKey"]:
                continue
            table.delete_entity(row["PartitionKey"], row["RowKey"])
            table.upsert_entity({**dict(row), "RowKey": old}, mode=UpdateMode.REPLACE)


# -- 2: copies resolved by write order, not by RunId -------------------------------------------------------
def test_seq02_a_resumed_run_after_a_change_run_keeps_its_copies_in_write_order(
    make_arm, harness_factory, monkeypatch
) -> None:
    """A subscription with its own state shard; a change run writes two of its resources (one it
    re-reads, one created since the night); the nightly run, resumed afterwards under its first
    attempt's (earlier) RunId, writes them again in the shard, and its tidy delete of the older
    copies fails. The next night must read the copies the resumed run wrote: no second alert."""
    from shared.core import layout

    monkeypatch.setattr(layout, "PARTITION_ROWS", 10)  # 12 resources: a shard of its own
    clock = Clock(NIGHT)
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="big")
    sites = [sub.add_site("rg-big", f"app-{i:02d}", **REQ) for i in range(12)]
    reread = sites[0]
    tenant.start_change_log(clock)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)
    assert {r["PartitionKey"] for r in state_rows(h)} == {f"{SUB}_0000"}

    night2 = NIGHT + timedelta(days=1)
    real_write = TableStore.write_batch

    def refuse_rows(self: TableStore, table: Any, entities: list[dict[str, Any]]) -> int:
        if table.table_name == h.tables["AUDIT_RESULTS_TABLE"]:
            raise RuntimeError("store refused the rows")
        return real_write(self, table, entities)

    monkeypatch.setattr(TableStore, "write_batch", refuse_rows)
    with pytest.raises(Exception, match="refused the rows"):
        h.run_at(night2)  # the first attempt: nothing written, resumable
    monkeypatch.setattr(TableStore, "write_batch", real_write)
    first_attempt = h.runs()[-1]["RunId"]

    clock.at = night2 + timedelta(hours=7)
    reread.update(tags={"owner": "ops"})  # still passing
    created = sub.add_site("rg-big", "app-new", **REQ)  # created passing
    h.poll_at(clock.at + timedelta(minutes=2))
    clock.at += timedelta(minutes=30)
    reread.update(client_cert_mode="Optional")
    created.update(client_cert_enabled=False)

    tidied: list[int] = []
    with monkeypatch.context() as patch:
        fail_state_tidy(patch, h, tidied)
        h.clear_events()
        h.run_at(night2 + timedelta(hours=8))  # resumes the first attempt
    resumed = h.runs()
    assert next(r for r in resumed if r["RunId"] == first_attempt)["Outcome"] == "complete"
    assert alerts(h) == Counter({fold(reread.id): 1, fold(created.id): 1})
    assert {e["RunId"] for e in h.new_failure_events()} == {first_attempt}
    assert_rows_agree_with_alerts(h)

    h.clear_events()
    h.run_at(night2 + timedelta(days=1))
    assert not h.new_failure_events(), "the copies the resumed run wrote are the later ones"
    after = {fold(r["ResourceId"]): r for r in state_rows(h)}
    assert after[fold(reread.id)]["Status"] == after[fold(created.id)]["Status"] == "FAIL"
    # the change run wrote the row it re-read where it was; only the one it saw first had a place to leave
    assert tidied == [1], "the copy the change run made of the new resource was to be deleted, and was not"


# -- 4: the lease is judged by the table service's clock, and fences the alert marks -------------------------
def _paused_run(h: AuditHarness, at: datetime, stage: str) -> tuple[Any, Any, Any, list[BaseException]]:
    """Start the nightly run at host time ``at`` in a thread; it stops at checkpoint ``stage``."""
    import threading

    paused, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hook(reached: str, _sub: str) -> None:
        if reached == stage and not paused.is_set():
            paused.set()
            go.wait(60)

    def run() -> None:
        try:
            h.run_at(at, hook)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert paused.wait(60), "the run reached its checkpoint"
    return thread, paused, go, errors


def test_seq04_a_host_whose_clock_runs_ahead_does_not_take_a_held_lease(make_arm, harness_factory) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-a", "app", **REQ)
    sub.add_site("rg-a", "other", **REQ)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)
    app.update(client_cert_mode="Optional")
    h.clear_events()

    night2 = NIGHT + timedelta(days=1)
    thread, _, go, errors = _paused_run(h, night2, "state_advanced")  # holds the lease, its alert owed
    h.run_at(night2 + timedelta(minutes=11))  # a host 11 minutes ahead: past the 10-minute lease by its clock
    go.set()
    thread.join(60)
    assert not errors, errors
    assert alerts(h) == Counter({fold(app.id): 1})
    assert len([r for r in h.runs() if r.get("Kind", "nightly") == "nightly"]) == 2
    assert any("skipped" in r.getMessage() for r in h.host.kept), "the second host skipped"
    assert_rows_agree_with_alerts(h)


def test_seq04_an_alert_mark_is_fenced_by_the_write_not_only_checked_before_it(make_arm, harness_factory) -> None:
    """The holder stops between its lease check and its alert mark for longer than the lease (a
    frozen process: its own clock saw nothing, the service's moved 11 minutes). Another host takes
    the lease, resumes the run and sends the owed alert. When the first host wakes, its mark is
    refused by the row itself (it changed since that host wrote it): it sends nothing."""
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-a", "app", **REQ)
    sub.add_site("rg-a", "other", **REQ)
    h: AuditHarness = harness_factory(make_arm(tenant))
    service = h.service_clock()
    h.run_at(NIGHT)
    app.update(client_cert_mode="Optional")
    h.clear_events()

    night2 = NIGHT + timedelta(days=1)
    thread, _, go, errors = _paused_run(h, night2, "state_advanced")
    service.date_offset = 11 * 60  # the table service's clock: the 10-minute lease has expired
    h.run_at(night2 + timedelta(minutes=11))  # takes over, resumes the run, sends the owed alert
    assert alerts(h) == Counter({fold(app.id): 1})
    go.set()
    thread.join(60)
    assert alerts(h) == Counter({fold(app.id): 1}), "the first host's mark was refused: nothing sent twice"
    assert errors and "another run" in str(errors[0]), errors
    runs = [r for r in h.runs() if r.get("Kind", "nightly") == "nightly"]
    assert len(runs) == 2 and runs[-1]["Outcome"] == "complete" and runs[-1]["Attempts"] == 2
    assert_rows_agree_with_alerts(h)


# -- 3: a nightly run never loses a night to a poll ----------------------------------------------------------
def test_seq03_a_poll_longer_than_the_lease_does_not_cost_the_night(make_arm, harness_factory, monkeypatch) -> None:
    import threading

    from shared.core import config
    from shared.run import ledger
    from tests.emulators.faults import FaultRule, Latency

    monkeypatch.setattr(config, "LEASE_FLOOR_SECONDS", 1)
    monkeypatch.setattr(ledger, "LEASE_WAIT_SECONDS", 0.2)
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-a", "app", **REQ)
    sub.add_site("rg-a", "other", **REQ)
    tenant.start_change_log()  # the timers run on the real clock
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_LEASE_SECONDS="2")
    h.run_timer()
    app.update(client_cert_mode="Optional")
    arm.faults.add(FaultRule(Latency(4.0), path=r"/resourceGroups/rg-a/providers/Microsoft\.Web/sites/app$", times=1))
    h.clear_events()
    poll = threading.Thread(target=h.run_changes_timer)
    poll.start()
    time.sleep(1.0)  # the poll holds the lease, its GET takes two lease lengths
    h.run_timer()  # waits for the poll's end (bounded by the poll's own deadline), then runs
    poll.join(60)
    nightly = [r for r in h.runs() if r.get("Kind", "nightly") == "nightly"]
    assert len(nightly) == 2 and nightly[-1]["Outcome"] == "complete", "the night ran"
    assert len(h.rows(nightly[-1]["RunId"])) == 2
    assert alerts(h) == Counter({fold(app.id): 1})
    assert_rows_agree_with_alerts(h)


def test_a_night_a_poll_kept_from_running_is_a_run_record_and_an_alert(make_arm, harness_factory, monkeypatch) -> None:
    import threading

    from shared.run import ledger
    from tests.emulators.faults import FaultRule, Latency

    monkeypatch.setattr(ledger, "LEASE_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(ledger, "nightly_wait", lambda settings: 1.0)  # a poll that outlasts its bound
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-a", "app", **REQ)
    tenant.start_change_log()
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_timer()
    app.update(client_cert_mode="Optional")
    arm.faults.add(FaultRule(Latency(4.0), path=r"/resourceGroups/rg-a/providers/Microsoft\.Web/sites/app$", times=1))
    h.clear_events()
    poll = threading.Thread(target=h.run_changes_timer)
    poll.start()
    time.sleep(1.0)
    h.run_timer()
    poll.join(60)
    lost = [r for r in h.runs() if r.get("Kind", "nightly") == "nightly"][-1]
    assert lost["Outcome"] == "failed" and "did not start" in lost["Error"] and lost["Total"] == 0
    summary = [s for s in h.run_summaries() if s["RunId"] == lost["RunId"]]
    assert summary and summary[0]["Outcome"] == "failed", "the RunSummary the incomplete-run alert fires on"
    assert alerts(h) == Counter({fold(app.id): 1}), "the poll's alert"


# -- 5 and 10: a resumed run writes its rows from the state as it was -------------------------------------------
def _refuse_marks(monkeypatch: pytest.MonkeyPatch, h: AuditHarness) -> None:
    refuse_state_writes(
        monkeypatch, h, lambda rows: any(r.get("AlertSentAt") for r in rows), "store refused the mark write"
    )


def report_new(h: AuditHarness, capsys: pytest.CaptureFixture[str], run_id: str) -> set[str]:
    import csv
    import io

    from shared.cli import main

    capsys.readouterr()
    code = main(["report", "--run", run_id, "--new", "--format", "csv"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    return {fold(row["ResourceId"]) for row in csv.DictReader(io.StringIO(out))}


def test_seq05_a_resumed_run_keeps_the_rows_its_alerts_name(make_arm, harness_factory, monkeypatch, capsys) -> None:
    """The run that found a failure dies before its alert; a poll between its attempts reads the app
    again. The resumed run's rows, record and ``report --new`` must still show the new failure its
    alert names, with the streak the state holds."""
    clock = Clock(NIGHT)
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-a", "app", **REQ)
    sub.add_site("rg-a", "other", **REQ)
    tenant.start_change_log(clock)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)
    night2 = NIGHT + timedelta(days=1)
    clock.at = night2 - timedelta(hours=1)
    app.update(client_cert_mode="Optional")
    _refuse_marks(monkeypatch, h)
    with pytest.raises(Exception, match="refused the mark"):
        h.run_at(night2)
    monkeypatch.undo()
    h.apply_env()
    run_id = h.runs()[-1]["RunId"]

    clock.at = night2 + timedelta(hours=2)
    app.update(tags={"owner": "web-team"})  # still failing
    h.clear_events()
    h.poll_at(clock.at + timedelta(minutes=2))
    h.run_at(night2 + timedelta(hours=3))  # the resume
    h.poll_at(clock.at + timedelta(hours=1, minutes=12))  # and the next poll
    assert alerts(h) == Counter({fold(app.id): 1})
    assert {e["RunId"] for e in h.new_failure_events()} == {run_id}
    assert_rows_agree_with_alerts(h)
    record = next(r for r in h.runs() if r["RunId"] == run_id)
    assert record["Outcome"] == "complete" and record["NewFailures"] == 1
    assert report_new(h, capsys, run_id) == {fold(app.id)}
    state = {fold(r["ResourceId"]): r for r in state_rows(h)}[fold(app.id)]
    assert state["FirstFailedAt"] == h.new_failure_events()[0]["FirstFailedAt"] != ""


def test_seq10_a_resumed_run_keeps_the_streak_its_first_attempt_found(make_arm, harness_factory, monkeypatch) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-a", "app", **REQ)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)
    app.update(client_cert_enabled=False)
    night2 = NIGHT + timedelta(days=1)
    _refuse_marks(monkeypatch, h)
    with pytest.raises(Exception, match="refused the mark"):
        h.run_at(night2)
    monkeypatch.undo()
    h.apply_env()
    found = {fold(r["ResourceId"]): r for r in state_rows(h)}[fold(app.id)]["FirstFailedAt"]
    assert found == night2.isoformat()
    h.clear_events()
    h.run_at(night2 + timedelta(hours=6))  # resumed
    assert h.runs()[-1]["Attempts"] == 2
    event = h.new_failure_events()[0]
    assert event["FirstFailedAt"] == found, "the failure began when the first attempt found it"
    assert {fold(r["ResourceId"]): r for r in state_rows(h)}[fold(app.id)]["FirstFailedAt"] == found
    assert_rows_agree_with_alerts(h)


# -- 7: a transient GET failure in a poll is retried by the next poll -------------------------------------------
def test_seq07_a_poll_get_that_fails_transiently_is_read_again_by_the_next_poll(make_arm, harness_factory) -> None:
    from tests.emulators.faults import FaultRule, Status

    h, arm, app, clock = app_broken_after_baseline(make_arm, harness_factory, AUDIT_RETRY_TOTAL="0")
    h.clear_events()
    arm.faults.add(FaultRule(Status(503), path=r"/sites/app$", times=1))
    first = h.poll_at(clock.at + timedelta(minutes=2))
    assert not h.new_failure_events()
    second = h.poll_at(clock.at + timedelta(minutes=12))  # within minutes, not at 02:00
    assert second.resources == 1 and alerts(h) == Counter({fold(app.id): 1}), "the next poll read it again"
    assert first.left == 1
    run = first.summary
    assert run is not None and fold(app.id) not in {fold(k) for k in h.rows_by_id(run.run_id)}, "no ERROR row"
    assert_rows_agree_with_alerts(h)
    third = h.poll_at(clock.at + timedelta(minutes=22))
    assert third.resources == 0 and third.already_handled == 1 and alerts(h) == Counter({fold(app.id): 1})


def test_a_poll_get_that_keeps_failing_becomes_an_error_row_after_some_polls(make_arm, harness_factory) -> None:
    from shared.azure.reads import MAX_ATTEMPTS
    from tests.emulators.faults import FaultRule, Status

    h, arm, app, clock = app_broken_after_baseline(make_arm, harness_factory, AUDIT_RETRY_TOTAL="0")
    arm.faults.add(FaultRule(Status(500), path=r"/sites/app$"))
    results = [h.poll_at(clock.at + timedelta(minutes=2 + 10 * i)) for i in range(MAX_ATTEMPTS)]
    assert [r.left for r in results] == [1] * (MAX_ATTEMPTS - 1) + [0]
    last = results[-1].summary
    assert last is not None
    row = h.rows_by_id(last.run_id)[app.key]
    assert row["Status"] == "ERROR" and f"tried {MAX_ATTEMPTS} times" in row["Reason"]
    assert "nightly run audits it" in row["Remediation"]
    assert not h.new_failure_events()


# -- 9: nothing pages before a baseline has completed ---------------------------------------------------------
def test_seq09_a_poll_between_a_failed_baseline_and_its_resume_pages_nothing(
    make_arm, harness_factory, monkeypatch
) -> None:
    from shared.core import layout

    other_sub = "b1b2c3d4-0000-4000-8000-000000000020"  # another state bucket than SUB's
    clock = Clock(NIGHT)
    tenant = Tenant()
    sub_a = tenant.add_subscription(SUB, display_name="a")
    sub_b = tenant.add_subscription(other_sub, display_name="b")
    # a has shards of its own (its state is written as soon as its rows are), b shares a bucket (written
    # at the end): the baseline stores a's state and dies on b's
    monkeypatch.setattr(layout, "PARTITION_ROWS", 2)
    for i in range(3):
        sub_a.add_site("rg-a", f"fine-{i}", **REQ)
    old_fail = sub_b.add_site("rg-b", "old-fail", client_cert_enabled=False)  # failing before any audit
    tenant.start_change_log(clock)
    h: AuditHarness = harness_factory(make_arm(tenant))

    def of_b(rows: list[dict[str, Any]]) -> bool:
        return any(fold(str(r.get("SubscriptionId"))) == other_sub for r in rows)

    refuse_state_writes(monkeypatch, h, of_b, "refused b's state")
    with pytest.raises(Exception, match="refused b's state"):
        h.run_at(NIGHT)  # the baseline: a's state stored, b's not
    monkeypatch.undo()
    h.apply_env()
    assert state_rows(h), "some state exists"

    clock.at = NIGHT + timedelta(hours=1)
    old_fail.update(tags={"owner": "b-team"})
    h.clear_events()
    h.poll_at(clock.at + timedelta(minutes=2))
    assert not h.new_failure_events(), "a failure older than the audit is not a new one"
    h.run_at(NIGHT + timedelta(hours=2))  # the baseline, resumed
    assert h.runs()[-1]["Baseline"] is True and h.runs()[-1]["Outcome"] == "complete"
    h.poll_at(clock.at + timedelta(minutes=12))
    h.run_at(NIGHT + timedelta(days=1))
    assert not h.new_failure_events()


# -- 6: a lagging Resource Graph index does not override a fresher GET -----------------------------------------
def test_seq06_a_lagging_resource_graph_index_does_not_override_a_fresher_get(make_arm, harness_factory) -> None:
    h, arm, app, clock = app_broken_after_baseline(
        make_arm, harness_factory, "other", AUDIT_INVENTORY_SOURCE="resourcegraph"
    )
    h.poll_at(clock.at + timedelta(minutes=2))  # the poll pages once
    assert alerts(h) == Counter({fold(app.id): 1})
    arm.freeze_resource_graph()  # the index stops here: the app fails, as far as it knows
    clock.at += timedelta(hours=1)
    app.update(client_cert_mode="Required")  # fixed
    h.poll_at(clock.at + timedelta(minutes=2))  # the poll's GET sees it fixed
    h.run_at(NIGHT + timedelta(days=1))  # 02:00: the index still says it fails
    assert alerts(h) == Counter({fold(app.id): 1}), "no page for an app that never failed again"
    row = {fold(r["ResourceId"]): r for r in h.rows()}[fold(app.id)]
    assert row["Status"] == "PASS" and row["NewFailure"] is False
    assert_rows_agree_with_alerts(h)
    arm.thaw_resource_graph()


# -- the "also decide" items ---------------------------------------------------------------------
def test_the_watermark_is_kept_in_resource_graphs_clock_not_the_hosts(make_arm, harness_factory) -> None:
    """A host whose clock runs two hours ahead of Resource Graph's: a watermark taken from the host's
    clock (the poll's start) would skip every change of the next hour and a half; kept in Resource
    Graph's clock (the latest change time it listed), the next poll lists the next change."""
    clock = Clock(NIGHT)
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    first, second = sub.add_site("rg-a", "first", **REQ), sub.add_site("rg-a", "second", **REQ)
    tenant.start_change_log(clock)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    ahead = timedelta(hours=2)
    clock.at = NIGHT + timedelta(hours=9)
    first.update(client_cert_mode="Optional")
    one = h.poll_at(clock.at + timedelta(minutes=2) + ahead)
    assert one.resources == 1 and one.watermark == clock.at, "the latest change time listed"
    clock.at += timedelta(minutes=10)
    second.update(client_cert_mode="Optional")
    two = h.poll_at(clock.at + timedelta(minutes=2) + ahead)
    assert two.resources == 1 and two.since == one.watermark - timedelta(minutes=30)
    assert alerts(h) == Counter({fold(first.id): 1, fold(second.id): 1})


def test_the_watermark_is_written_before_the_poll_lets_the_lease_go(make_arm, harness_factory, monkeypatch) -> None:
    from shared.run.lease import LeaseKeeper

    h, _, _, clock = app_broken_after_baseline(make_arm, harness_factory)
    seen_at_release: list[Any] = []
    release = LeaseKeeper.release

    def watching(self: LeaseKeeper, *, keep_run: bool) -> None:
        if self._kind == "changes":
            rows = [r for r in h.table("AUDIT_RUNS_TABLE") if (r["PartitionKey"], r["RowKey"]) == ("watermark", "changes")]
            seen_at_release.append(rows[0]["ChangesThrough"] if rows else None)
        release(self, keep_run=keep_run)

    monkeypatch.setattr(LeaseKeeper, "release", watching)
    result = h.poll_at(clock.at + timedelta(minutes=2))
    assert result.resources == 1 and result.watermark is not None
    assert seen_at_release == [result.watermark], "the watermark was stored while the poll still held the lease"
