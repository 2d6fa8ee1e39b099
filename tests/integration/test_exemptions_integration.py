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
