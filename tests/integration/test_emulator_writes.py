"""The ARM emulator's writes: refused unless a test installs :class:`~tests.emulators.writes.SiteWrites`
(the audit is proven read-only), and, installed, exactly what the real-CLI test relies on: only the
four client certificate properties are applied, anything else a write would change is logged."""

from __future__ import annotations

import json
from typing import Any

import requests

from tests.emulators.arm import ArmEmulator
from tests.emulators.tenant import Tenant
from tests.emulators.writes import SiteWrites

SUB = "dddddddd-4444-4444-8444-444444444444"
API = "?api-version=2025-05-01"


def _estate(make_arm: Any) -> tuple[ArmEmulator, Tenant]:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, "Writes")
    site = sub.add_site("-rg", "web", client_cert_enabled=False, https_only=False)
    site.add_slot("blue", client_cert_enabled=True, client_cert_mode="Optional", exclusion_paths="/;/a")
    return make_arm(tenant), tenant


def _call(arm: ArmEmulator, method: str, path: str, body: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {arm.make_token(arm.url)}", "Content-Type": "application/json"}
    return requests.request(
        method,
        f"{arm.url}{path}{API}",
        data=None if body is None else json.dumps(body),
        headers=headers,
        verify=str(arm.tls.ca_file),
        timeout=30,
    )


def test_writes_are_refused_unless_a_test_teaches_them(make_arm: Any) -> None:
    arm, tenant = _estate(make_arm)
    site = f"/subscriptions/{SUB}/resourceGroups/-rg/providers/Microsoft.Web/sites/web"
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        answer = _call(arm, method, site, {"properties": {"clientCertEnabled": True}})
        assert answer.status_code == 405 and answer.json()["error"]["code"] == "MethodNotAllowed", method
    assert tenant.get_subscription(SUB).get_site("-rg", "web").client_cert_enabled is False  # type: ignore[union-attr]


def test_taught_writes_apply_the_fix_properties_and_log_everything_else(make_arm: Any) -> None:
    arm, tenant = _estate(make_arm)
    writes = SiteWrites(arm)
    site = tenant.get_subscription(SUB).get_site("-rg", "web")  # type: ignore[union-attr]
    assert site is not None
    slot = site.get_slot("blue")
    assert slot is not None
    base = f"/subscriptions/{SUB}/resourceGroups/-RG/providers/Microsoft.Web/sites/WEB"  # ARM's casing rule

    patched = _call(
        arm,
        "PATCH",
        f"{base}/slots/blue",
        {"properties": {"clientCertMode": "Required", "clientCertExclusionPaths": "/a"}},
    )
    assert patched.status_code == 200 and patched.json()["properties"]["clientCertExclusionPaths"] == "/a"
    assert (slot.client_cert_mode, slot.exclusion_paths) == ("Required", "/a")
    assert (site.client_cert_enabled, site.exclusion_paths) == (False, None), "a slot's write leaves its site alone"
    assert writes.writes[-1].resource_id == slot.id and writes.writes[-1].others == {}

    served = _call(arm, "GET", base, None).json()
    body = {
        **served,
        "properties": {**served["properties"], "clientCertEnabled": True, "httpsOnly": True, "siteConfig": {}},
    }
    put = _call(arm, "PUT", base, body)
    assert put.status_code == 200 and (site.client_cert_enabled, site.https_only) == (True, True)
    last = writes.writes[-1]
    assert last.method == "PUT" and last.applied == {"clientCertEnabled": True, "httpsOnly": True}
    assert set(last.others) == {"properties.siteConfig"}, "another property a write would change is logged"

    bad = _call(arm, "PATCH", base, {"properties": {"clientCertEnabled": "yes"}})
    assert bad.status_code == 400 and site.client_cert_enabled is True
    missing = _call(arm, "PATCH", base.replace("/WEB", "/nope"), {"properties": {"clientCertEnabled": True}})
    assert missing.status_code == 404
    assert len(writes.writes) == 2, "refused writes are not logged as writes"
