"""Exemptions against Azurite with the real engine: the ``exempt`` commands, and the full lifecycle
(FAIL -> EXEMPT -> new FAIL after the expiry). The rules and the matching are in ``tests/unit/test_exemptions.py``."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from tests.reportbed import SUB_A, AuditBed
from tests.unit.test_exemptions import SITE_ID


# -- against Azurite ------------------------------------------------------------------------------
def _unique() -> str:
    return uuid.uuid4().hex[:10]


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


# -- rows written by hand that cannot be read ---------------------------------------------------------
def _hand_rows(bed: AuditBed) -> dict[str, dict[str, Any]]:
    """Rows as someone might type them in Storage Explorer: each is wrong in its own way."""
    future = (bed.clock + timedelta(days=30)).isoformat()
    base = {"PartitionKey": "exemption", "Reason": "legacy", "Approver": "alice"}
    return {
        "shop": {  # a date no UTC arithmetic can hold: this stopped every run, poll and command
            **base,
            "RowKey": "hand-shop",
            "Scope": bed.site_id("shop"),
            "CreatedAt": "0001-01-01T00:00:00+01:00",
            "ExpiresAt": future,
        },
        "jobs": {
            **base,
            "RowKey": "hand-jobs",
            "Scope": bed.site_id("jobs"),
            "CreatedAt": future,
            "ExpiresAt": future,
            "Reason": 42,
        },  # a number for a reason
        "api/staging": {**base, "RowKey": "hand-staging", "Scope": bed.site_id("api/staging"), "CreatedAt": future},
    }


def test_a_malformed_exemption_is_an_error_for_that_exemption_only(
    bed: AuditBed, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    bed.run()  # baseline
    portal = bed.site_id("portal")
    args = ["exempt", "add", "--scope", portal, "--reason", "health probe", "--approver", "bob", "--expires", "20d"]
    assert bed.cli(capsys, args)[0] == 0
    store = bed.store()
    try:
        for row in _hand_rows(bed).values():
            store.exemptions.upsert_entity(row)
    finally:
        store.close()

    caplog.clear()
    bed.run(outcome="complete")  # the run goes on
    rows = _statuses(bed, capsys)
    assert rows["shop"]["Status"] == "FAIL" and rows["shop"]["Exemption"] == "", "audited as if unexempted"
    assert rows["jobs"]["Status"] == "FAIL" and rows["api/staging"]["Status"] == "FAIL"
    assert rows["portal"]["Status"] == "EXEMPT", "a valid exemption still applies"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "broken" in r.getMessage()]
    assert len(warnings) == 3
    assert any("exemption/hand-shop" in w and "CreatedAt" in w and "0001-01-01T00:00:00+01:00" in w for w in warnings)
    assert any("exemption/hand-jobs" in w and "Reason is not text" in w for w in warnings)
    assert any("exemption/hand-staging" in w and "ExpiresAt is missing" in w for w in warnings)

    # exempt list: the valid one, then each broken one, in every format
    code, out, _ = bed.cli(capsys, ["exempt", "list"])
    assert code == 0 and "health probe" in out
    assert out.count("broken         exempts nothing") == 3 and "0001-01-01T00:00:00+01:00" in out
    code, out, _ = bed.cli(capsys, ["exempt", "list", "--format", "json"])
    listed = json.loads(out)
    assert [e["state"] for e in listed].count("broken") == 3
    assert {e["scope"] for e in listed if e["state"] == "broken"} == {
        bed.site_id(n) for n in ("shop", "jobs", "api/staging")
    }
    code, out, _ = bed.cli(capsys, ["exempt", "list", "--format", "csv"])
    assert sum(1 for r in csv.DictReader(io.StringIO(out)) if r["state"] == "broken" and r["problem"]) == 3

    # the report, in each format that shows exemptions
    code, out, _ = bed.cli(capsys, ["report"])
    assert code == 1 and "Broken exemptions (3)" in out and "Reason is not text" in out
    code, out, _ = bed.cli(capsys, ["report", "--format", "json"])
    assert len(json.loads(out)["report"]["brokenExemptions"]) == 3
    page = bed.cli(capsys, ["report", "--format", "html", "-o", "-"])[1]
    assert "Broken exemptions (3)" in page and 'id="broken"' in page

    # fixing it: `exempt remove` finds a hand-written row by its Scope (or its key), broken or not
    code, out, _ = bed.cli(capsys, ["exempt", "remove", bed.site_id("jobs")])
    assert code == 0 and "Removed the broken exemption row" in out
    assert bed.cli(capsys, ["exempt", "remove", "hand-staging"])[0] == 0
    args = ["exempt", "add", "--scope", bed.site_id("shop"), "--reason", "legacy", "--approver", "a", "--expires", "5d"]
    assert bed.cli(capsys, args)[0] == 0
    bed.run()
    assert _statuses(bed, capsys)["shop"]["Status"] == "EXEMPT", "the valid exemption applies beside the broken row"
    assert bed.cli(capsys, ["exempt", "list"])[1].count("broken ") == 1
    assert bed.cli(capsys, ["exempt", "remove", "hand-shop"])[0] == 0
    assert "broken" not in bed.cli(capsys, ["exempt", "list"])[1]


def test_a_malformed_exemption_does_not_stop_the_change_poll(make_arm, harness_factory) -> None:
    from datetime import UTC, datetime

    from tests.emulators.tenant import Tenant

    night = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
    clock = {"at": night}
    tenant = Tenant()
    sub = tenant.add_subscription("f0f0f0f0-0000-4000-8000-000000000001", display_name="prod")
    app = sub.add_site("rg", "app", client_cert_enabled=True, client_cert_mode="Required")
    tenant.start_change_log(lambda: clock["at"])
    h = harness_factory(make_arm(tenant))
    h.run_at(night)
    with h.service() as svc:
        svc.get_table_client(h.tables["AUDIT_EXEMPTIONS_TABLE"]).upsert_entity(
            {
                "PartitionKey": "exemption",
                "RowKey": "hand",
                "Scope": app.id,
                "Reason": "r",
                "Approver": "a",
                "CreatedAt": "0001-01-01T00:00:00+01:00",
                "ExpiresAt": "2026-12-01T00:00:00Z",
            }
        )
    clock["at"] = night + timedelta(hours=2)
    app.update(client_cert_mode="Optional")
    h.clear_events()
    result = h.poll_at(clock["at"] + timedelta(minutes=1))
    assert result.summary is not None and result.summary.outcome == "complete"
    assert h.rows_by_id(result.summary.run_id)[app.key]["Status"] == "FAIL"
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [app.key]
