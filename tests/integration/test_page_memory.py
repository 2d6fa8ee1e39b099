"""A listing that waits holds records, not ARM's parsed pages: the real ARM inventory against the ARM
emulator, with a consumer that stops after the first record (as a listing does at the memory cap).

The site list and the group lists it starts are read until every group list waits at its
hand-off; then no parsed site JSON is alive in the process (the emulator is idle: it builds each
answer's JSON per request). Before, items were handed over lazily from the parsed page, so the
waiting consumer kept the site list's page and each waiting group list its own: about 1 MB of
objects per page of 100 full sites, up to five pages per audit thread.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest
from azure.identity import ManagedIdentityCredential

from shared.azure.inventory import GROUP_LIST_CONCURRENCY, ArmInventory
from shared.core.config import load_settings
from shared.core.models import SiteRecord
from tests.emulators.tenant import Tenant

SUB = "0b5e2c1d-0000-4000-8000-00000000c0de"
PAGE = 20
GROUPS = GROUP_LIST_CONCURRENCY + 2
SITES = 6 * PAGE  # per group: each group list is six pages long


def parsed_sites() -> int:
    """Site objects as ARM's JSON has them, alive in this process."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj) is dict and "properties" in obj and "/providers/Microsoft.Web/sites/" in str(obj.get("id", ""))
    )


def settled(arm: Any, quiet: float = 1.5, limit: float = 30.0) -> None:
    last, since, end = arm.stats()["total"], time.monotonic(), time.monotonic() + limit
    while time.monotonic() < end:
        time.sleep(0.1)
        now = arm.stats()["total"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError("the listing never stopped reading")


def test_a_waiting_listing_holds_no_parsed_page(make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="waits")
    for g in range(GROUPS):
        for n in range(SITES):
            sub.add_site(f"rg-{g}", f"app-{g}-{n:03d}", client_cert_enabled=True, client_cert_mode="Required")
    arm = make_arm(tenant, page_size=PAGE)
    monkeypatch.delenv("AUDIT_SUBSCRIPTIONS", raising=False)
    for key, value in arm.env().items():
        monkeypatch.setenv(key, value)
    inventory = ArmInventory(ManagedIdentityCredential(), load_settings(require_table=False))
    scan = inventory.scan(SUB)
    try:
        first = next(scan)
        assert isinstance(first, SiteRecord)
        settled(arm)  # the site list's first page read, and the group lists it started wait for room
        assert arm.stats()["by_kind"]["rg_sites_list"] >= GROUP_LIST_CONCURRENCY, arm.stats()["by_kind"]
        assert parsed_sites() == 0, "a waiting consumer kept ARM's parsed pages"
        rest = list(scan)
    finally:
        scan.close()
        inventory.close()
    records = [first, *rest]
    assert all(isinstance(r, SiteRecord) for r in records)
    # every site twice (the site list's, then its group list's), each once per list
    assert len(records) == 2 * GROUPS * SITES
    assert len({(r.resource_id, i < GROUPS * SITES) for i, r in enumerate(records)}) == len(records)
