"""The site-record mapping: one ARM site or slot JSON object to the record the evaluation reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.azure.sites import site_record
from shared.core.models import InventoryError, SiteRecord

SUB = "00000000-0000-0000-0000-0000000000aa"
SITE = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Web/sites/shop"
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "arm-examples"


def item(**props: Any) -> dict[str, Any]:
    return {
        "id": SITE,
        "name": "shop",
        "type": "Microsoft.Web/sites",
        "kind": "app,linux",
        "location": "West Europe",
        "tags": {"Owner": "payments", "env": "prod"},
        "properties": {"state": "Running", **props},
    }


def test_every_field_the_evaluation_reads() -> None:
    record = site_record(
        item(clientCertEnabled=True, clientCertMode="OptionalInteractiveUser", clientCertExclusionPaths="/a;/b",
             httpsOnly=False, publicNetworkAccess="Disabled")
    )
    assert isinstance(record, SiteRecord)
    assert (record.subscription_id, record.resource_group, record.app_name, record.slot) == (SUB, "rg-web", "shop", "")
    assert (record.kind, record.state, record.location) == ("app,linux", "Running", "West Europe")
    assert record.client_cert_enabled is True and record.client_cert_mode == "OptionalInteractiveUser"
    assert record.exclusion_paths == "/a;/b" and record.https_only is False
    assert record.public_network_access == "Disabled"
    assert record.tags == (("Owner", "payments"), ("env", "prod"))


@pytest.mark.parametrize(
    ("raw", "expected"), [(True, True), (False, False), ("true", True), ("False", False), (None, None), ("yes", None), (1, None)]
)
def test_booleans_only_when_arm_said_so(raw: Any, expected: bool | None) -> None:
    record = site_record(item(clientCertEnabled=raw, httpsOnly=raw))
    assert isinstance(record, SiteRecord)
    assert record.client_cert_enabled is expected and record.https_only is expected


def test_missing_properties_stay_missing_for_the_evaluation_to_judge() -> None:
    raw = item()
    del raw["properties"], raw["kind"], raw["tags"]
    record = site_record(raw)
    assert isinstance(record, SiteRecord)
    assert record.client_cert_enabled is None and record.client_cert_mode is None and record.https_only is None
    assert (record.kind, record.state, record.tags) == ("", "", ())


def test_a_slot_by_type_and_position() -> None:
    raw = item()
    raw.update(id=f"{SITE}/slots/staging", type="Microsoft.Web/sites/slots", name="shop/staging")
    record = site_record(raw)
    assert isinstance(record, SiteRecord) and (record.app_name, record.slot) == ("shop", "staging")


def test_an_id_that_is_not_a_site_is_an_error_for_that_item() -> None:
    raw = item()
    raw["id"] = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Storage/storageAccounts/x"
    error = site_record(raw, SUB)
    assert isinstance(error, InventoryError) and error.subscription_id == SUB


def test_the_reference_payloads_map() -> None:
    """Real WebApps_List / WebApps_Get answers from Microsoft's REST examples."""
    pages = sorted(REFERENCE.glob("web-*/**/*.json"))
    mapped = 0
    for path in pages:
        body = json.loads(path.read_text())
        response = body.get("responses", {}).get("200", {}).get("body") if "responses" in body else body
        if not isinstance(response, dict):
            continue
        items = response.get("value") if isinstance(response.get("value"), list) else [response]
        for raw in items:
            if isinstance(raw, dict) and "/providers/microsoft.web/sites/" in str(raw.get("id", "")).lower():
                record = site_record(raw)
                assert isinstance(record, (SiteRecord, InventoryError)), path
                mapped += isinstance(record, SiteRecord)
    if not pages:
        pytest.skip("no reference payloads beside this checkout")
    assert mapped > 0
