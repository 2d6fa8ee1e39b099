"""A group list's back-pressure is real: the real ARM inventory against the ARM emulator, with a
consumer that stops taking what the scan yields, reads no more pages of a group's list once that
list is :data:`~shared.azure.inventory.GROUP_PAGES_AHEAD` pages ahead of its consumer
(``threads.HandOff``); when the consumer goes on, the rest comes, every item once.

One site in one group with many slots: the site list shows the site (one page), the group's
``includeSlots`` list holds the site and its slots over many pages; the consumer takes the site and
the first slot, then stops.

And a listing that waits holds records, not ARM's parsed pages (below).
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any

import pytest
from azure.identity import ManagedIdentityCredential

from shared.azure import inventory
from shared.azure.inventory import GROUP_LIST_CONCURRENCY, GROUP_PAGES_AHEAD, ArmInventory
from shared.core.config import load_settings
from shared.core.models import SiteRecord
from tests.emulators.tenant import Tenant

SUB = "0b5e2c1d-0000-4000-8000-00000000b23c"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
PAGE = 10  # items per ARM page of a group list, and per page the group list hands over
SLOTS = 300  # the group list: the site and its slots, 31 pages


def group_pages(arm: Any) -> int:
    return int(arm.stats()["by_kind"]["rg_sites_list"])


def all_requests(arm: Any) -> int:
    return int(arm.stats()["total"])


def settled(arm: Any, count: Any = group_pages, quiet: float = 1.5, limit: float = 30.0) -> int:
    """``count(arm)`` (the group list's pages read), once it has not moved for ``quiet`` seconds."""
    last, since, end = count(arm), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < end:
        time.sleep(0.1)
        now = count(arm)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"the listing never stopped reading ({last} after {limit} s)")


def arm_scan(
    make_arm: Any, tenant: Tenant, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> tuple[Any, ArmInventory]:
    """An ARM emulator for ``tenant``, and the real ARM inventory signed in to it."""
    arm = make_arm(tenant, **options)
    monkeypatch.delenv("AUDIT_SUBSCRIPTIONS", raising=False)
    for key, value in arm.env().items():
        monkeypatch.setenv(key, value)
    return arm, ArmInventory(ManagedIdentityCredential(), load_settings(require_table=False))


def test_a_group_list_stops_reading_two_pages_ahead_of_a_consumer_that_stops(
    make_arm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = Tenant()
    site = tenant.add_subscription(SUB, display_name="big").add_site("rg-big", "app", **REQ)
    for n in range(SLOTS):
        site.add_slot(f"s{n:03d}", **REQ)
    monkeypatch.setattr(inventory, "GROUP_PAGE_ITEMS", PAGE)
    arm, arm_inventory = arm_scan(make_arm, tenant, monkeypatch, page_size={"rg_sites_list": PAGE})
    scan = arm_inventory.scan(SUB)
    try:
        # the site (the site list's), the same site again (its group list's), then the first slot
        taken = [next(scan), next(scan), next(scan)]
        assert [isinstance(t, SiteRecord) and t.slot for t in taken] == ["", "", "s000"]

        # The consumer holds the group list's first handed-over page; two more wait in the queue
        # and the list holds a fourth, complete, waiting for room: (2 + 2) pages of PAGE items (the
        # site among them) are all it may have read.
        held = (GROUP_PAGES_AHEAD + 2) * PAGE
        bound = math.ceil(held / PAGE)
        total = math.ceil((SLOTS + 1) / PAGE)
        assert bound < total
        assert settled(arm) == bound, "the group list read past its hand-off's bound"
        time.sleep(1.0)  # a producer waiting for room re-tries every 0.5 s: still no page read
        assert group_pages(arm) == bound

        rest = list(scan)  # the consumer goes on: the rest of the list, every slot once
        slots = [t.slot for t in taken + rest if isinstance(t, SiteRecord) and t.slot]
        assert sorted(slots) == [f"s{n:03d}" for n in range(SLOTS)]
        assert len(taken) + len(rest) == SLOTS + 2  # and the site twice: the site list's, the group list's
        assert group_pages(arm) == total
    finally:
        scan.close()
        arm_inventory.close()


# -- a listing that waits holds records, not ARM's parsed pages ----------------------------------------
# The site list and the group lists it starts are read until every group list waits at its hand-off;
# then no parsed site JSON is alive in the process (the emulator is idle: it builds each answer's
# JSON per request). Before, items were handed over lazily from the parsed page, so the waiting
# consumer kept the site list's page and each waiting group list its own: about 1 MB of objects per
# page of 100 full sites, up to five pages per audit thread.
WAIT_SUB = "0b5e2c1d-0000-4000-8000-00000000c0de"
WAIT_PAGE = 20
WAIT_GROUPS = GROUP_LIST_CONCURRENCY + 2
WAIT_SITES = 6 * WAIT_PAGE  # per group: each group list is six pages long


def parsed_sites() -> int:
    """Site objects as ARM's JSON has them, alive in this process."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj) is dict and "properties" in obj and "/providers/Microsoft.Web/sites/" in str(obj.get("id", ""))
    )


def test_a_waiting_listing_holds_no_parsed_page(make_arm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription(WAIT_SUB, display_name="waits")
    for g in range(WAIT_GROUPS):
        for n in range(WAIT_SITES):
            sub.add_site(f"rg-{g}", f"app-{g}-{n:03d}", client_cert_enabled=True, client_cert_mode="Required")
    arm, arm_inventory = arm_scan(make_arm, tenant, monkeypatch, page_size=WAIT_PAGE)
    scan = arm_inventory.scan(WAIT_SUB)
    try:
        first = next(scan)
        assert isinstance(first, SiteRecord)
        settled(arm, all_requests)  # the site list's first page read, and the group lists it started wait for room
        assert arm.stats()["by_kind"]["rg_sites_list"] >= GROUP_LIST_CONCURRENCY, arm.stats()["by_kind"]
        assert parsed_sites() == 0, "a waiting consumer kept ARM's parsed pages"
        rest = list(scan)
    finally:
        scan.close()
        arm_inventory.close()
    records = [first, *rest]
    assert all(isinstance(r, SiteRecord) for r in records)
    # every site twice (the site list's, then its group list's), each once per list
    assert len(records) == 2 * WAIT_GROUPS * WAIT_SITES
    assert len({(r.resource_id, i < WAIT_GROUPS * WAIT_SITES) for i, r in enumerate(records)}) == len(records)
