"""A group list's back-pressure is real: the real ARM inventory against the ARM emulator, with a
consumer that stops taking what the scan yields, reads no more pages of a group's list once that
list is :data:`~shared.azure.inventory.GROUP_PAGES_AHEAD` pages ahead of its consumer
(``threads.HandOff``); when the consumer goes on, the rest comes, every item once.

One site in one group with many slots: the site list shows the site (one page), the group's
``includeSlots`` list holds the site and its slots over many pages; the consumer takes the site and
the first slot, then stops.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from azure.identity import ManagedIdentityCredential

from shared.azure import inventory
from shared.azure.inventory import GROUP_PAGES_AHEAD, ArmInventory
from shared.core.config import load_settings
from shared.core.models import SiteRecord
from tests.emulators.tenant import Tenant

SUB = "0b5e2c1d-0000-4000-8000-00000000b23c"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
PAGE = 10  # items per ARM page of a group list, and per page the group list hands over
SLOTS = 300  # the group list: the site and its slots, 31 pages


def group_pages(arm: Any) -> int:
    return int(arm.stats()["by_kind"]["rg_sites_list"])


def settled(arm: Any, quiet: float = 1.5, limit: float = 30.0) -> int:
    """The group list's pages read, once no page has been read for ``quiet`` seconds."""
    last, since, end = group_pages(arm), time.monotonic(), time.monotonic() + limit
    while time.monotonic() < end:
        time.sleep(0.1)
        now = group_pages(arm)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"the group list never stopped reading ({last} pages after {limit} s)")


def test_a_group_list_stops_reading_two_pages_ahead_of_a_consumer_that_stops(
    make_arm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = Tenant()
    site = tenant.add_subscription(SUB, display_name="big").add_site("rg-big", "app", **REQ)
    for n in range(SLOTS):
        site.add_slot(f"s{n:03d}", **REQ)
    arm = make_arm(tenant, page_size={"rg_sites_list": PAGE})
    monkeypatch.setattr(inventory, "GROUP_PAGE_ITEMS", PAGE)
    monkeypatch.delenv("AUDIT_SUBSCRIPTIONS", raising=False)
    for key, value in arm.env().items():
        monkeypatch.setenv(key, value)
    arm_inventory = ArmInventory(ManagedIdentityCredential(), load_settings(require_table=False))
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
