"""Exactly once, whichever run sees it first: the ten sequences of issue 19, each end to end.

Each ``test_seqNN_*`` reproduces sequence NN of the issue with the real timer functions (through
``tests/harness.py``), the ARM emulator and Azurite, and asserts what must hold: every new failure
alerted exactly once, and the rows agreeing with the alerts. Each failed on the code as it was when
the issue was taken (main at 720189d). The model-based test (``test_model_exactly_once.py``)
explores the interleavings these sequences are examples of.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableServiceClient, UpdateMode

from shared.keys import encode_key, resource_key
from shared.names import fold
from shared.store import TableStore
from tests.emulators.tenant import ResourceChange, Tenant
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


def alerts(h: AuditHarness) -> Counter[str]:
    return Counter(fold(e["ResourceId"]) for e in h.new_failure_events())


def legacy_key(resource_id: str) -> str:
    """The RowKey an older version gave an id: ``lower()`` of it, made safe for Table keys."""
    return encode_key(resource_id.strip().lower().rstrip("/"))


def rows_of(h: AuditHarness, run_id: str) -> list[dict[str, Any]]:
    return h.rows(run_id)


def state_rows(h: AuditHarness) -> list[dict[str, Any]]:
    return h.table("AUDIT_LATEST_TABLE")


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
    clock = Clock(NIGHT)
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    app = sub.add_site("rg-a", "app", **REQ)
    sub.add_site("rg-a", "quiet", **REQ)
    changes = tenant.start_change_log(clock)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT)  # the baseline

    clock.at = NIGHT + timedelta(hours=9)
    app.update(client_cert_mode="Optional")
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
    from shared.exemptions import new_exemption
    from shared.schema import exemption_row

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
    real = TableStore.write_batch

    def refuse_marks(self: TableStore, table: Any, entities: list[dict[str, Any]]) -> int:
        if table.table_name == h.tables["AUDIT_LATEST_TABLE"] and any(e.get("AlertSentAt") for e in entities):
            raise RuntimeError("store refused the mark write")
        return real(self, table, entities)

    monkeypatch.setattr(TableStore, "write_batch", refuse_marks)
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

    # A poll re-reads one of them first: found under its old key, still failing, nothing new.
    clock.at = NIGHT + timedelta(days=1, hours=3)
    polled.update(tags={"owner": "team-µ"})
    h.clear_events()
    h.poll_at(clock.at + timedelta(minutes=2))
    change_run = [r for r in h.runs() if r.get("Kind") == "changes"][-1]
    assert change_run["NewFailures"] == 0 and not h.new_failure_events()
    polled_row = next(r for r in rows_of(h, change_run["RunId"]) if fold(r["ResourceId"]) == fold(polled.id))
    assert polled_row["FirstFailedAt"] == before[fold(polled.id)]["FirstFailedAt"]

    # The nightly run adopts the rest: the owed alert goes out once, streaks are kept.
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=2))
    assert alerts(h) == Counter({fold(owed.id): 1})
    assert h.new_failure_events()[0]["RunId"] == night2
    rows = {fold(r["ResourceId"]): r for r in h.rows()}
    assert not any(r["NewFailure"] for r in rows.values())
    for site in (streak, polled, owed):
        assert rows[fold(site.id)]["FirstFailedAt"] == before[fold(site.id)]["FirstFailedAt"], site
    after = state_rows(h)
    assert sorted(r["RowKey"] for r in after) == sorted(resource_key(r["ResourceId"]) for r in after)
    assert len(after) == 3, "one row per resource: the old-key copies are deleted"
    assert not any(r["AlertPending"] for r in after)
    assert_rows_agree_with_alerts(h)


def _rekey_as_older_version(h: AuditHarness) -> None:
    with TableServiceClient.from_connection_string(h.azurite.connection_string) as svc:
        table = svc.get_table_client(h.tables["AUDIT_LATEST_TABLE"])
        for row in list(table.list_entities()):
            old = legacy_key(row["ResourceId"])
            if old == row["RowKey"]:
                continue
            table.delete_entity(row["PartitionKey"], row["RowKey"])
            table.upsert_entity({**dict(row), "RowKey": old}, mode=UpdateMode.REPLACE)
