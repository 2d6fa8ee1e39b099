"""The subscription registry (the runs table's ``subscription`` partition) across nights: what the
run keeps of it in memory (``ledger.registry_memo``) is what its rows carry over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from azure.data.tables._deserialize import TablesEntityDatetime

from shared.core.schema import SUBSCRIPTIONS_PARTITION
from shared.run.ledger import registry_memo
from tests.emulators.tenant import Tenant
from tests.harness import AuditHarness

NIGHT1 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


def registry(h: AuditHarness) -> dict[str, dict[str, Any]]:
    return {r["RowKey"]: r for r in h.table("AUDIT_RUNS_TABLE") if r["PartitionKey"] == SUBSCRIPTIONS_PARTITION}


def test_a_subscription_keeps_when_it_was_first_audited_and_its_tenant_night_after_night(
    make_arm, harness_factory
) -> None:
    tenant = Tenant()
    for n in range(3):
        tenant.add_subscription(f"{n:08x}-0000-4000-8000-00000000000a").add_site("rg", f"app-{n}")
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_at(NIGHT1)
    first = registry(h)
    assert len(first) == 3
    for night in (1, 2):
        h.run_at(NIGHT1 + timedelta(days=night))
    rows = registry(h)
    assert set(rows) == set(first)
    for key, row in rows.items():
        assert row["FirstAuditedAt"] == NIGHT1, (key, row["FirstAuditedAt"])
        assert row["LastAuditedAt"] == NIGHT1 + timedelta(days=2)
        assert row["TenantId"] == tenant.tenant_id
        assert row["LastRunId"] == h.last_run_id()


def test_the_memo_keeps_the_first_audit_as_a_plain_datetime_and_the_tenant() -> None:
    """The table client's datetimes carry their wire form (a dict each): the memo keeps the instant."""
    first = TablesEntityDatetime(2026, 5, 1, 2, 0, 0, 123456, tzinfo=UTC)
    first._service_value = "2026-05-01T02:00:00.1234567Z"  # type: ignore[attr-defined]
    memo = registry_memo(
        {
            "a": {"PartitionKey": "subscription", "RowKey": "a", "FirstAuditedAt": first, "TenantId": "t-1", "X": 1},
            "b": {"PartitionKey": "subscription", "RowKey": "b"},
        }
    )
    assert memo == {
        "a": {"FirstAuditedAt": datetime(2026, 5, 1, 2, 0, 0, 123456, tzinfo=UTC), "TenantId": "t-1"},
        "b": {"FirstAuditedAt": None, "TenantId": ""},
    }
    assert type(memo["a"]["FirstAuditedAt"]) is datetime
