"""Exemptions: validation rules, the pure matching and the table mapping (the lifecycle against
Azurite is in ``tests/integration/test_exemptions_integration.py``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.azure.exemptions import (
    BrokenExemption,
    Exemption,
    apply_exemption,
    exemption_from_entity,
    exemption_request,
    exemption_row,
    expiring_soon,
    new_exemption,
    parse_expiry,
    read_exemption,
    validate_scope,
)
from shared.core.errors import ExemptionError
from shared.core.evaluate import evaluate
from shared.core.models import SiteRecord, Status
from shared.core.plan import plan_subscription
from shared.core.schema import result_row
from shared.run.ledger import RunSummary

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SUB = "11111111-2222-3333-4444-555555555555"
RG_ID = f"/subscriptions/{SUB}/resourceGroups/rg-web"
SITE_ID = f"{RG_ID}/providers/Microsoft.Web/sites/shop"
FAILING = evaluate(
    SiteRecord(
        resource_id=SITE_ID,
        subscription_id=SUB,
        resource_group="rg-web",
        app_name="shop",
        client_cert_enabled=True,
        client_cert_mode="Optional",
        tags=(("Owner", "team-a"), ("clientcert-exemption", "public storefront")),
    )
)


def exemption(scope: str = SITE_ID, days: int = 30) -> Exemption:
    return new_exemption(scope, "public site", "alice", NOW + timedelta(days=days), NOW)


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scope",
    [
        f"/subscriptions/{SUB}",
        RG_ID,
        f"/SUBSCRIPTIONS/{SUB.upper()}/resourcegroups/RG.Prod.v2",
        f"/subscriptions/{SUB}/resourceGroups/rg-café-ü",
        f"/subscriptions/{SUB}/resourceGroups/rg(legacy)",
        SITE_ID,
        f"{SITE_ID}/slots/staging",
        f"{SITE_ID}/",
    ],
)
def test_valid_scopes(scope: str) -> None:
    assert validate_scope(scope) == scope.strip().rstrip("/")


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "/",
        "/subscriptions",
        "/subscriptions/",
        "/subscriptions/not-a-guid",
        f"subscriptions/{SUB}",
        f"/subscriptions/{SUB}/resourceGroups/",
        f"/subscriptions/{SUB}/resourceGroups/rg.",
        f"{RG_ID}/providers",
        f"{RG_ID}/providers/Microsoft.Storage/storageAccounts/x",
        f"{SITE_ID}/config/web",
        f"{SITE_ID}/slots/",
        f"/subscriptions/{SUB}/resourceGroups/rg/../other",
    ],
)
def test_invalid_scopes_are_refused(scope: str) -> None:
    with pytest.raises(ExemptionError, match="scope"):
        validate_scope(scope)


def test_expiry_is_required_future_and_bounded() -> None:
    assert exemption(days=365).expires == NOW + timedelta(days=365)
    with pytest.raises(ExemptionError, match="more than 365 days"):
        exemption(days=366)
    with pytest.raises(ExemptionError, match="not in the future"):
        new_exemption(SITE_ID, "r", "a", NOW, NOW)
    with pytest.raises(ExemptionError, match="reason"):
        new_exemption(SITE_ID, "  ", "a", NOW + timedelta(days=1), NOW)
    with pytest.raises(ExemptionError, match="approver"):
        new_exemption(SITE_ID, "r", "", NOW + timedelta(days=1), NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-06-30", datetime(2026, 6, 30, tzinfo=UTC)),
        ("2026-06-30T18:00:00Z", datetime(2026, 6, 30, 18, tzinfo=UTC)),
        ("2026-06-30T20:00:00+02:00", datetime(2026, 6, 30, 18, tzinfo=UTC)),
        ("2026-06-30T18:00", datetime(2026, 6, 30, 18, tzinfo=UTC)),
        ("30d", NOW + timedelta(days=30)),
        ("+12h", NOW + timedelta(hours=12)),
        ("2w", NOW + timedelta(weeks=2)),
        ("90m", NOW + timedelta(minutes=90)),
    ],
)
def test_parse_expiry(text: str, expected: datetime) -> None:
    assert parse_expiry(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "never", "30y", "2026-13-01", "tomorrow"])
def test_parse_expiry_rejects_nonsense(text: str) -> None:
    with pytest.raises(ExemptionError):
        parse_expiry(text, NOW)


# -- matching -------------------------------------------------------------------------------------
def test_exemption_turns_fail_into_exempt_while_valid_only() -> None:
    ex = exemption(days=10)
    exempt = apply_exemption(FAILING, [ex], NOW + timedelta(days=1))
    assert exempt.status is Status.EXEMPT
    assert "public site" in exempt.reason and "alice" in exempt.reason and "FAIL" in exempt.reason
    assert exempt.exemption == SITE_ID
    assert apply_exemption(FAILING, [ex], NOW + timedelta(days=10)).status is Status.FAIL
    assert apply_exemption(FAILING, [ex], NOW - timedelta(seconds=1)).status is Status.FAIL


def test_scope_prefix_is_case_insensitive_and_on_path_boundary() -> None:
    rg = exemption(RG_ID.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/"))
    assert apply_exemption(FAILING, [rg], NOW).status is Status.EXEMPT
    sibling = replace(FAILING, resource_id=SITE_ID + "2")
    only_site = exemption(SITE_ID)
    assert apply_exemption(sibling, [only_site], NOW).status is Status.FAIL
    other_rg = replace(FAILING, resource_id=SITE_ID.replace("rg-web", "rg-web-2"))
    assert apply_exemption(other_rg, [rg], NOW).status is Status.FAIL
    slot = replace(FAILING, resource_id=SITE_ID + "/slots/staging")
    assert apply_exemption(slot, [only_site], NOW).status is Status.EXEMPT


def test_pass_and_error_are_never_exempt() -> None:
    passing = replace(FAILING, status=Status.PASS)
    error = replace(FAILING, status=Status.ERROR)
    assert apply_exemption(passing, [exemption()], NOW) is passing
    assert apply_exemption(error, [exemption()], NOW) is error


def test_expiring_soon_lists_active_ones_soonest_first() -> None:
    soon, later, far = exemption(days=3), exemption(RG_ID, days=10), exemption(f"/subscriptions/{SUB}", days=100)
    assert expiring_soon([far, later, soon], NOW, timedelta(days=14)) == [soon, later]
    assert expiring_soon([soon], NOW + timedelta(days=4), timedelta(days=14)) == []


# -- tag requests ---------------------------------------------------------------------------------
def test_tag_request_is_only_listed_never_an_exemption() -> None:
    assert exemption_request(FAILING, "ClientCert-Exemption") == "public storefront"
    assert exemption_request(FAILING, None) == ""
    assert exemption_request(replace(FAILING, status=Status.PASS), "clientcert-exemption") == ""
    plan = plan_subscription(
        "S", {"rk": FAILING}, {}, [], summary=RunSummary("r1", NOW), audited_at=NOW, read=True, partial=False,
        request_tag="clientcert-exemption",
    )
    (row,) = plan.result_rows()
    assert row["ExemptionRequest"] == "public storefront" and row["Status"] == "FAIL"
    assert result_row("r1", FAILING, None, NOW, "rk")["ExemptionRequest"] == ""


# -- entity round trip and hand-written rows ------------------------------------------------------
def test_entity_round_trip() -> None:
    ex = exemption()
    back = exemption_from_entity(exemption_row(ex))
    assert back is not None
    assert (back.scope, back.reason, back.approver, back.created, back.expires) == (
        ex.scope,
        ex.reason,
        ex.approver,
        ex.created,
        ex.expires,
    )


@pytest.mark.parametrize(
    "change",
    [
        {"ExpiresAt": None},
        {"Scope": "/subscriptions"},
        {"Scope": ""},
        {"Approver": ""},
        {"Reason": " "},
        {"CreatedAt": "yesterday"},
    ],
)
def test_hand_written_rows_that_break_a_rule_exempt_nothing(change: dict[str, Any]) -> None:
    entity = {**exemption_row(exemption()), **change}
    assert exemption_from_entity(entity) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"CreatedAt": "0001-01-01T00:00:00+01:00"}, "CreatedAt '0001-01-01T00:00:00+01:00' is not a date-time in UTC"),
        ({"ExpiresAt": "9999-12-31T23:00:00-05:00"}, "ExpiresAt '9999-12-31T23:00:00-05:00' is not a date-time in UTC"),
        ({"CreatedAt": "yesterday"}, "CreatedAt is not a date-time: 'yesterday'"),
        ({"CreatedAt": True}, "CreatedAt is not a date-time: True"),
        ({"ExpiresAt": 20261231}, "ExpiresAt is not a date-time: 20261231"),
        ({"Reason": 42}, "Reason is not text: 42"),
        ({"Approver": ["alice"]}, "Approver is not text: ['alice']"),
        ({"Scope": 7}, "Scope is not text: 7"),
        ({"Scope": "/subscriptions"}, "is not a subscription, resource group, site or slot id"),
        ({"Approver": None}, "Approver is missing"),
        ({"ExpiresAt": ""}, "ExpiresAt is missing"),
    ],
)
def test_a_malformed_row_is_a_broken_exemption_that_says_why(change: dict[str, Any], problem: str) -> None:
    entity = {**exemption_row(exemption()), **change}
    broken = read_exemption(entity)
    assert isinstance(broken, BrokenExemption), broken
    assert problem in broken.problem
    assert broken.row == f"exemption/{entity['RowKey']}"
    assert broken.scope == (entity["Scope"] if isinstance(entity["Scope"], str) else entity["RowKey"])
    assert exemption_from_entity(entity) is None


def test_a_row_without_its_fields_is_broken_not_a_crash() -> None:
    broken = read_exemption({"PartitionKey": "exemption", "RowKey": "x"})
    assert isinstance(broken, BrokenExemption) and broken.scope == "x" and "Scope is missing" in broken.problem


def test_hand_written_overlong_expiry_is_cut_to_the_maximum() -> None:
    entity = {**exemption_row(exemption()), "ExpiresAt": datetime(9999, 1, 1, tzinfo=UTC)}
    loaded = exemption_from_entity(entity)
    assert loaded is not None and loaded.expires == NOW + timedelta(days=365)
