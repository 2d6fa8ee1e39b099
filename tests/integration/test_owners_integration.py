"""Owners and subscription names on every result row, end to end: the real engine against the
emulated tenant (which serves the tags as ARM and Resource Graph do) and Azurite, over several runs.

The tag rules are in ``tests/unit/test_owners.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.reportbed import SUB_A, SUB_B, AuditBed

# -- end to end: emulated ARM / Resource Graph -> engine -> Azurite --------------------------------
TAGS: dict[str, dict[str, str]] = {
    "shop": {"Owner": "alice@contoso.com"},
    "api": {"TEAM": "payments"},
    "portal": {"owner": " ", "Contact": "bob"},
    "intranet": {"CostCenter": "42"},
}


@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    bed = AuditBed(azurite, make_arm, monkeypatch)
    bed.sites["api/qa"] = bed.sites["api"].add_slot("qa", client_cert_enabled=False, tags={"oWnEr": "qa-crew"})
    return bed


def _owners(rows: dict[str, dict[str, Any]], bed: AuditBed) -> dict[str, str]:
    by_id = {site.id.lower(): name for name, site in bed.sites.items()}
    return {by_id[key]: row["Owner"] for key, row in rows.items() if key in by_id}


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
def test_rows_carry_owner_and_subscription_name_over_several_runs(
    bed: AuditBed, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    monkeypatch.setenv("AUDIT_INVENTORY_SOURCE", source)
    expected = {
        "shop": "alice@contoso.com",
        "api": "payments",
        "api/staging": "payments",  # no tag of its own: its site's
        "api/qa": "qa-crew",
        "portal": "bob",  # a blank owner tag does not count; contact does
        "jobs": "",
        "intranet": "",
    }
    bed.run(tags=TAGS)
    rows = bed.rows()
    assert _owners(rows, bed) == expected
    names = {row["SubscriptionId"]: row["SubscriptionName"] for row in rows.values()}
    assert names == {SUB_A: "Prod", SUB_B: "Dev"}

    # Owners follow the tags from night to night; the setting picks which tags count.
    bed.run(tags={"api": {"contact": "carol"}, "jobs": {"Owner": "ops"}})
    assert _owners(bed.rows(), bed) == {**expected, "api": "carol", "api/staging": "carol", "jobs": "ops"}
    monkeypatch.setenv("AUDIT_OWNER_TAGS", "CostCenter")
    bed.run()
    assert _owners(bed.rows(), bed) == {name: "42" if name == "intranet" else "" for name in expected}

    # Unreadable: ERROR rows still name their subscription. (Resource Graph cannot tell a forbidden
    # subscription from an empty one, so there the query itself fails, for every subscription.)
    if source == "arm":
        bed.arm.faults.forbid_subscription(SUB_B)
    else:
        bed.arm.faults.status("/providers/Microsoft.ResourceGraph/resources", 500, method="POST")
        monkeypatch.setenv("AUDIT_RETRY_TOTAL", "0")
    bed.run(outcome="partial" if source == "arm" else "blind")  # blind: no subscription could be read
    errors = {
        row["SubscriptionId"]: row for row in bed.rows().values() if row["Status"] == "ERROR" and row["ResourceId"] != "/"
    }
    assert set(errors) == ({SUB_B} if source == "arm" else {SUB_A, SUB_B})
    assert {sub: (row["SubscriptionName"], row["Owner"]) for sub, row in errors.items()} == {
        sub: (names[sub], "") for sub in errors
    }


def test_configured_subscriptions_are_named_by_a_get_each(bed: AuditBed, monkeypatch: pytest.MonkeyPatch) -> None:
    """With AUDIT_SUBSCRIPTIONS the subscription list is not read; each name comes from GET
    /subscriptions/{id}, and a subscription whose GET fails is audited with an empty name."""
    monkeypatch.setenv("AUDIT_SUBSCRIPTIONS", f"{SUB_A},{SUB_B}")
    bed.run(tags=TAGS)
    assert {r["SubscriptionId"]: r["SubscriptionName"] for r in bed.rows().values()} == {SUB_A: "Prod", SUB_B: "Dev"}
    assert bed.arm.stats()["by_kind"].get("subscriptions", 0) == 0
    bed.arm.faults.status(rf"^/subscriptions/{SUB_B}$", 403, code="AuthorizationFailed")
    bed.tenant.get_subscription(SUB_A).display_name = "Production"  # type: ignore[union-attr]
    bed.run()
    rows = bed.rows()
    assert {r["SubscriptionId"]: r["SubscriptionName"] for r in rows.values()} == {SUB_A: "Production", SUB_B: ""}
    assert {r["Status"] for r in rows.values() if r["SubscriptionId"] == SUB_B} == {"PASS"}  # still audited
