"""Every ARM list maps its items alike: site or slot by ``type``, an unusable item is an ERROR of its own.

Pure unit tests of the ARM inventory's list walk (``shared.azure.inventory._scan``) over stand-in SDK
pagers that serve ARM's JSON items; the emulated end-to-end runs are in
``tests/integration/test_audit_integration.py``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import AzureError

from shared.azure import group_apps
from shared.azure.group_apps import GroupApps
from shared.azure.inventory import _scan, found_key
from shared.core.models import InventoryError, SiteRecord

SUB = "00000000-0000-0000-0000-0000000000aa"


def site(rg: str, app: str, slot: str = "") -> dict[str, Any]:
    rid = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}"
    item: dict[str, Any] = {
        "id": rid + (f"/slots/{slot}" if slot else ""),
        "name": f"{app}/{slot}" if slot else app,
        "type": "Microsoft.Web/sites/slots" if slot else "Microsoft.Web/sites",
        "properties": {"clientCertEnabled": True, "clientCertMode": "Required"},
    }
    return item


class Pager:
    """What ``guarded_pages`` needs of an SDK pager: ``by_page()`` over lists of items."""

    def __init__(self, *pages: list[dict[str, Any]], fail: AzureError | None = None) -> None:
        self.pages, self.fail = pages, fail

    def by_page(self) -> Iterator[list[dict[str, Any]]]:
        if self.fail is not None:
            raise self.fail
        return iter(self.pages)


class WebApps:
    def __init__(self, sites: Pager, groups: dict[str, Pager], slots: dict[tuple[str, str], Pager]) -> None:
        self.sites, self.groups, self.slots = sites, groups, slots
        self.slot_lists: list[tuple[str, str]] = []

    def list(self) -> Pager:
        return self.sites

    def list_by_resource_group(self, rg: str, include_slots: bool = False) -> Pager:
        assert include_slots
        return self.groups[rg.lower()]

    def list_slots(self, rg: str, app: str) -> Pager:
        self.slot_lists.append((rg, app))
        return self.slots[(rg.lower(), app.lower())]


class Web:
    def __init__(self, web_apps: WebApps) -> None:
        self.web_apps = web_apps


def names(found: list[SiteRecord | InventoryError]) -> list[tuple[str, str, str]]:
    return sorted((f.resource_group, f.app_name, f.slot) for f in found if isinstance(f, SiteRecord))


def test_every_list_keeps_sites_and_slots_and_errors_only_the_unusable_item() -> None:
    garbage = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Web/sites/a/config/web"
    web = Web(
        WebApps(
            sites=Pager(
                [site("rg1", "a"), site("rg1", "a", "qa"), {"id": garbage, "name": "a/web"}],
                [site("slots", "b"), site("Sites", "slots"), {"name": "no-id"}, site("Sites", "sites")],
            ),
            groups={
                # C was created between the site list and its group's list: a site-typed item here is kept.
                "rg1": Pager([site("rg1", "a"), site("rg1", "a", "qa"), site("rg1", "c")], [site("rg1", "c", "dev")]),
                "slots": Pager([site("slots", "b"), site("slots", "b", "x")]),
                "sites": Pager([site("Sites", "slots"), site("Sites", "sites"), site("Sites", "sites", "slots")]),
            },
            slots={},
        )
    )
    found = list(_scan(web, SUB))  # type: ignore[arg-type]

    # every list's items come as listed (a group list repeats its sites): the pipeline keeps the
    # first sighting, which is the site list's (it comes first)
    assert [f.resource_id for f in found[:4] if isinstance(f, SiteRecord)] == [
        site("rg1", "a")["id"],
        site("rg1", "a", "qa")["id"],
        site("slots", "b")["id"],
    ]
    assert len(found) == 9 + 2 + 5  # the group lists repeat rg1/a, rg1/a/qa, slots/b, Sites/slots, Sites/sites
    firsts: dict[str, SiteRecord | InventoryError] = {}
    for f in found:
        firsts.setdefault(found_key(f), f)
    found = list(firsts.values())
    assert names(found) == [
        ("Sites", "sites", ""),
        ("Sites", "sites", "slots"),
        ("Sites", "slots", ""),
        ("rg1", "a", ""),
        ("rg1", "a", "qa"),  # a slot-typed item in the site list is kept
        ("rg1", "c", ""),  # a site-typed item in a group list is kept
        ("rg1", "c", "dev"),
        ("slots", "b", ""),
        ("slots", "b", "x"),
    ]
    errors = [f for f in found if isinstance(f, InventoryError)]
    assert len(errors) == 2
    assert errors[0].scope_id == garbage and errors[0].subscription_id == SUB
    assert errors[1].scope_id.startswith(f"/subscriptions/{SUB}/") and "no-id" in errors[1].scope_id
    assert all(e.scope_id.lower() != f"/subscriptions/{SUB}" for e in errors), "the subscription itself was read"
    assert len({f.key for f in found if isinstance(f, SiteRecord)}) == 9


@pytest.mark.parametrize("apps_in_memory", [2_000, 1], ids=["in memory", "on disk"])
def test_per_app_slot_lists_map_items_alike(apps_in_memory: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_apps, "APPS_IN_MEMORY", apps_in_memory)
    garbage = f"/subscriptions/{SUB}/resourceGroups/Sites/providers/Microsoft.Web/sites/sites/slots"
    web_apps = WebApps(
        sites=Pager([site("Sites", "sites"), site("Sites", "slots", "blue")]),
        groups={"sites": Pager(fail=AzureError("connection reset"))},
        slots={
            ("sites", "sites"): Pager(
                [site("Sites", "sites", "slots"), {"id": garbage, "type": "Microsoft.Web/sites/slots"}]
            ),
            ("sites", "slots"): Pager([site("Sites", "slots", "blue"), site("Sites", "slots", "green")]),
        },
    )
    found = list(_scan(Web(web_apps), SUB))  # type: ignore[arg-type]
    assert names(found).count(("Sites", "slots", "blue")) == 2  # the site list's, then its slot list's
    found = list({found_key(f): f for f in reversed(found)}.values())  # the first sighting of each

    # the app known only from its slot in the site list gets its slot list too
    assert web_apps.slot_lists == [("Sites", "sites"), ("Sites", "slots")]
    assert names(found) == [
        ("Sites", "sites", ""),
        ("Sites", "sites", "slots"),
        ("Sites", "slots", "blue"),
        ("Sites", "slots", "green"),
    ]
    errors = [f for f in found if isinstance(f, InventoryError)]
    assert [e.scope_id for e in errors] == [garbage]
    assert "has 9 segments" in errors[0].message


def test_group_list_results_are_let_go_once_yielded() -> None:
    """A large subscription's group lists hold its slots (and the sites the site list had not reached)
    until the site list ends; each group's records are released as they are yielded, not kept to
    the end of the subscription's scan (memory bounded by what is still to be yielded)."""
    groups = [f"rg{i:02d}" for i in range(20)]
    web = Web(
        WebApps(
            sites=Pager([site(rg, "app") for rg in groups]),
            groups={rg: Pager([site(rg, "app", f"s{k}") for k in range(50)]) for rg in groups},
            slots={},
        )
    )
    early = set(groups[:9])

    def alive_in_early_groups() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, SiteRecord) and o.resource_group in early)

    scan = _scan(web, SUB)  # type: ignore[arg-type]
    yielded = 0
    for found in scan:
        assert isinstance(found, SiteRecord)
        yielded += 1
        if found.resource_group == groups[10] and found.slot == "s49":
            break
    del found
    assert yielded == 20 + 11 * 50
    assert alive_in_early_groups() == 0, "records of groups already yielded are still held"
    assert sum(1 for _ in scan) == 9 * 50  # and the rest still comes


def test_group_apps_are_kept_in_memory_up_to_a_limit_then_on_disk() -> None:
    """What the scan remembers of a subscription's sites (their apps, for a group's per-app fallback)
    is bounded: past ``limit`` names, a temporary file holds them; each group's come back distinct
    (as ARM compares names), in the order listed."""
    apps = GroupApps(limit=3)
    listed = [("rg1", "a"), ("rg2", "b"), ("rg1", "A"), ("rg1", "Ç"), ("rg2", "c"), ("rg1", "ç"), ("rg1", "d")]
    for group, app in listed:
        apps.add(group, app)
        assert len(apps._memory) < 3
    assert apps._file is not None
    assert apps.of("rg1") == ["a", "Ç", "d"]
    assert apps.of("rg2") == ["b", "c"]
    assert apps.of("rg3") == []
    apps.add("rg3", "e")  # still adds after a read
    assert apps.of("rg3") == ["e"]
    apps.close()
