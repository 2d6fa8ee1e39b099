"""A value no encoder accepts never costs anyone a row: lone UTF-16 surrogates in the estate.

JSON allows ``"\\ud800"`` without its pair; Python decodes it to a lone surrogate, which no UTF-8
encoder takes. An app owner can put one in a tag or an exclusion path, and a subscription's display
name can hold one. The emulator serves them as a real service does (the escape, in valid JSON); the
audit makes them U+FFFD where ARM's JSON becomes a record, so the nightly run (both inventory
sources), the change poll and the report all go on, every resource with its row.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.cli import main
from tests.emulators.tenant import Site, Tenant
from tests.harness import AuditHarness

SUB = "e0e0e0e0-0000-4000-8000-000000000001"
OTHER = "e0e0e0e0-0000-4000-8000-000000000002"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
HIGH, LOW = "\ud800", "\udfff"  # lone halves of a pair, as json.loads makes them from their escapes
R = "\ufffd"


def estate(clock: Any) -> tuple[Tenant, dict[str, Site]]:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name=f"prod {HIGH}")
    other = tenant.add_subscription(OTHER, display_name="other")
    sites = {
        "tagged": sub.add_site(
            "rg-a", "tagged", client_cert_enabled=False, tags={"owner": f"pay{HIGH}ments", "exempt-please": f"legacy{LOW}"}
        ),
        "paths": sub.add_site("rg-a", "paths", exclusion_paths=f"/health{LOW}", **REQ),
        "plain": sub.add_site("rg-b", "plain", **REQ),
        "neighbour": other.add_site("rg-o", "neighbour", client_cert_enabled=False),
    }
    sites["slot"] = sites["tagged"].add_slot("staging", tags={f"team{HIGH}": "x"}, **REQ)
    tenant.start_change_log(clock)
    return tenant, sites


def assert_valid_rows(h: AuditHarness, tenant: Tenant, run_id: str | None = None) -> dict[str, dict[str, Any]]:
    rows = h.rows_by_id(run_id)
    assert set(rows) == set(tenant.expected()), "every resource has its row"
    for key, expected in tenant.expected().items():
        assert rows[key]["Status"] == expected.status, key
    for row in rows.values():
        for value in row.values():
            if isinstance(value, str):
                value.encode("utf-8")  # stored as valid text
    return rows


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
def test_lone_surrogates_in_tags_paths_and_names_cost_no_row(
    make_arm, harness_factory, capsys, source: str
) -> None:
    clock = {"at": NIGHT}
    tenant, sites = estate(lambda: clock["at"])
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_INVENTORY_SOURCE=source, AUDIT_EXEMPTION_REQUEST_TAG="exempt-please")
    h.run_at(NIGHT)
    assert h.runs()[-1]["Outcome"] == "complete"
    rows = assert_valid_rows(h, tenant)
    tagged = rows[sites["tagged"].key]
    assert tagged["Owner"] == f"pay{R}ments" and f"pay{R}ments" in tagged["Tags"]
    assert tagged["ExemptionRequest"] == f"legacy{R}"
    assert tagged["SubscriptionName"] == f"prod {R}"
    assert rows[sites["paths"].key]["ExclusionPaths"] == f"/health{R}"
    assert rows[sites["paths"].key]["Status"] == "WARN"
    assert f"team{R}" in rows[sites["slot"].key]["Tags"]

    # the next night a change to the tagged app is alerted, its event valid JSON text
    sites["tagged"].update(client_cert_enabled=True, client_cert_mode="Required")
    h.run_at(NIGHT + timedelta(days=1))
    sites["tagged"].update(client_cert_enabled=False)
    h.clear_events()
    h.run_at(NIGHT + timedelta(days=2))
    (event,) = h.new_failure_events()
    assert event["ResourceId"].lower() == sites["tagged"].key

    # the security team's report reads them back
    capsys.readouterr()
    assert main(["report", "--format", "csv", "--status", "PASS,WARN,FAIL,EXEMPT,ERROR"]) == 1
    out = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(out) == len(tenant.expected())
    assert any(r["Owner"] == f"pay{R}ments" for r in out)
    assert main(["report", "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["results"]


def test_the_change_poll_reads_a_surrogate_and_moves_its_watermark(make_arm, harness_factory) -> None:
    clock = {"at": NIGHT}
    tenant, sites = estate(lambda: clock["at"])
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    clock["at"] = NIGHT + timedelta(hours=3)
    sites["plain"].update(client_cert_mode="Optional", tags={"owner": f"ops{LOW}"})
    h.clear_events()
    result = h.poll_at(clock["at"] + timedelta(minutes=2))
    assert result.summary is not None and result.summary.outcome == "complete"
    row = h.rows_by_id(result.summary.run_id)[sites["plain"].key]
    assert row["Status"] == "FAIL" and row["Owner"] == f"ops{R}" and row["NewFailure"] is True
    assert [e["ResourceId"].lower() for e in h.new_failure_events()] == [sites["plain"].key]
    assert result.watermark == clock["at"], "moved to the change it handled (Resource Graph's clock)"


def test_an_arm_error_message_with_a_surrogate_is_a_valid_error_row(make_arm, harness_factory) -> None:
    tenant, _ = estate(lambda: NIGHT)
    arm = make_arm(tenant)
    arm.faults.status(rf"^/subscriptions/{OTHER}/providers/Microsoft\.Web/sites$", 403, message=f"denied {HIGH}")
    h: AuditHarness = harness_factory(arm)
    h.run_at(NIGHT)
    rows = h.rows_by_id()
    error = rows[f"/subscriptions/{OTHER}"]
    assert error["Status"] == "ERROR" and f"denied {R}" in error["Reason"]
    assert h.runs()[-1]["Outcome"] == "partial"
    assert rows[f"/subscriptions/{SUB}/resourcegroups/rg-b/providers/microsoft.web/sites/plain"]["Status"] == "PASS"
