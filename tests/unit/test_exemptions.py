"""Exemptions: validation rules, the pure matching, the table mapping, and the full lifecycle
against Azurite with the real engine (FAIL -> EXEMPT -> new FAIL after the expiry)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.errors import ExemptionError
from shared.evaluate import evaluate
from shared.exemptions import (
    Exemption,
    apply_exemption,
    exemption_from_entity,
    exemption_request,
    exemption_row,
    expiring_soon,
    new_exemption,
    parse_expiry,
    validate_scope,
)
from shared.ledger import RunSummary
from shared.models import SiteRecord, Status
from shared.plan import plan_subscription
from shared.schema import result_row
from tests.reportbed import SUB_A, AuditBed

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


def test_hand_written_overlong_expiry_is_cut_to_the_maximum() -> None:
    entity = {**exemption_row(exemption()), "ExpiresAt": datetime(9999, 1, 1, tzinfo=UTC)}
    loaded = exemption_from_entity(entity)
    assert loaded is not None and loaded.expires == NOW + timedelta(days=365)


# -- against Azurite ------------------------------------------------------------------------------
def _unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.mark.integration
def test_exempt_cli_add_list_remove(azurite: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from shared.cli import main

    suffix = _unique()
    monkeypatch.setenv("SSL_CERT_FILE", str(azurite.tls.ca_file))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite.tls.ca_file))
    monkeypatch.setenv("AUDIT_TABLE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("AUDIT_EXEMPTIONS_TABLE", f"Ex{suffix}")
    monkeypatch.delenv("AUDIT_TABLE_SERVICE_URI", raising=False)

    add = ["exempt", "add", "--scope", SITE_ID, "--reason", "public storefront", "--approver", "alice@sec"]
    assert main([*add, "--expires", "30d"]) == 0
    assert "takes effect on the next run" in capsys.readouterr().out
    assert main([*add, "--expires", "400d"]) == 4  # refused, and the first one is untouched
    assert "more than 365 days" in capsys.readouterr().err
    assert (
        main(["exempt", "add", "--scope", "/subscriptions", "--reason", "x", "--approver", "y", "--expires", "1d"]) == 4
    )
    capsys.readouterr()

    assert main(["exempt", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["scope"] for e in listed] == [SITE_ID]
    assert listed[0]["approver"] == "alice@sec" and listed[0]["reason"] == "public storefront"

    assert main(["exempt", "remove", SITE_ID.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")]) == 0
    assert "Removed" in capsys.readouterr().out
    assert main(["exempt", "remove", SITE_ID]) == 1
    assert "No exemption" in capsys.readouterr().err
    assert main(["exempt", "list"]) == 0
    assert "No exemptions" in capsys.readouterr().out


@pytest.fixture
def bed(azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> AuditBed:
    return AuditBed(azurite, make_arm, monkeypatch, identity=True)  # the deployed, identity-only setup


def _statuses(bed: AuditBed, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, dict[str, str]]:
    code, out, _ = bed.cli(capsys, ["report", "--format", "csv", *extra])
    assert code in (0, 1)
    return {(r["AppName"] + ("/" + r["Slot"] if r["Slot"] else "")): r for r in csv.DictReader(io.StringIO(out))}


@pytest.mark.integration
def test_exemption_lifecycle_fail_exempt_then_new_fail(bed: AuditBed, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's acceptance path: FAIL -> (exempt add) EXEMPT on the next run -> new FAIL after expiry."""
    bed.run()  # baseline
    assert _statuses(bed, capsys)["shop"]["Status"] == "FAIL"

    shop = bed.site_id("shop")
    code, _, _ = bed.cli(
        capsys,
        ["exempt", "add", "--scope", shop, "--reason", "public storefront", "--approver", "alice", "--expires", "30d"],
    )
    assert code == 0
    rg_func = f"/SUBSCRIPTIONS/{SUB_A.upper()}/RESOURCEGROUPS/RG-FUNC"  # any casing covers the group
    args = ["exempt", "add", "--scope", rg_func, "--reason", "legacy batch", "--approver", "bob", "--expires", "10d"]
    assert bed.cli(capsys, args)[0] == 0
    store = bed.store()
    try:  # a row written by hand in Storage Explorer that would exempt the whole tenant, forever
        store.upsert_many(
            store.exemptions,
            [
                {
                    "PartitionKey": "exemption",
                    "RowKey": "everything",
                    "Scope": "/subscriptions",
                    "Reason": "x",
                    "Approver": "y",
                }
            ],
        )
    finally:
        store.close()

    bed.run()
    rows = _statuses(bed, capsys)
    assert rows["shop"]["Status"] == "EXEMPT" and rows["shop"]["Exemption"] == shop
    assert "public storefront; approved by alice" in rows["shop"]["Reason"]
    assert "Without the exemption: FAIL" in rows["shop"]["Reason"]
    assert rows["jobs"]["Status"] == "EXEMPT"
    assert rows["api/staging"]["Status"] == "FAIL"  # the hand-written row exempted nothing
    assert rows["portal"]["Status"] == "WARN"
    assert not any(r["NewFailure"] == "true" for r in rows.values())
    code, out, _ = bed.cli(capsys, ["report"])
    assert "Exemptions expiring within 14 days" in out and "(legacy batch; approved by bob)" in out
    assert "public storefront" not in out.split("Exemptions expiring", 1)[1].split("\n\n", 1)[0]
    code, out, _ = bed.cli(capsys, ["report", "--expiring-days", "31"])
    assert "(public storefront; approved by alice)" in out

    bed.run(at=bed.clock + timedelta(days=31))  # both exemptions have expired
    rows = _statuses(bed, capsys)
    assert rows["shop"]["Status"] == "FAIL" and rows["shop"]["NewFailure"] == "true"
    assert rows["shop"]["PreviousStatus"] == "EXEMPT"
    assert rows["jobs"]["Status"] == "FAIL" and rows["jobs"]["NewFailure"] == "true"
    code, out, _ = bed.cli(capsys, ["report", "--new"])
    assert code == 1 and "FAIL    new shop" in out and "FAIL    new jobs" in out
