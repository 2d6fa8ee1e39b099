"""Owners from tags (``AUDIT_OWNER_TAGS``): the tag rules and the setting.

The rows the real engine writes over several runs are checked in
``tests/integration/test_owners_integration.py``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.core.config import DEFAULT_OWNER_TAGS, load_settings
from shared.core.errors import ConfigError
from shared.core.evaluate import error_finding
from shared.core.keys import resource_key
from shared.core.models import InventoryError, SiteRecord
from shared.core.owners import OwnerResolver, owner_from_tags, set_owners
from tests.reportbed import SUB_A

URI = {"AUDIT_TABLE_SERVICE_URI": "https://acct.table.core.windows.net"}


# -- the rules ------------------------------------------------------------------------------------
def test_owner_tags_are_tried_in_order_whatever_their_casing() -> None:
    names = ("owner", "team", "contact")
    assert owner_from_tags((("OWNER", "alice"), ("team", "payments")), names) == "alice"
    assert owner_from_tags((("Team", "payments"), ("Contact", "bob")), names) == "payments"
    assert owner_from_tags((("cOnTaCt", "bob"),), names) == "bob"
    assert owner_from_tags((("owner", "  "), ("contact", " bob ")), names) == "bob"  # blank does not count
    assert owner_from_tags((("CostCenter", "42"),), names) == ""
    assert owner_from_tags((), names) == ""
    assert owner_from_tags((("owner", "a"), ("contact", "b")), ("contact", "owner")) == "b"
    # one name in two casings: the same answer whatever order the tags came in
    assert owner_from_tags((("owner", "x"), ("Owner", "y")), names) == owner_from_tags(
        (("Owner", "y"), ("owner", "x")), names
    )


def _record(app: str, slot: str = "", tags: dict[str, str] | None = None, rg: str = "rg") -> SiteRecord:
    rid = f"/subscriptions/{SUB_A}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}"
    return SiteRecord(
        resource_id=rid + (f"/slots/{slot}" if slot else ""),
        subscription_id=SUB_A,
        resource_group=rg,
        app_name=app,
        slot=slot,
        tags=tuple(sorted((tags or {}).items())),
    )


def test_a_slot_without_an_owner_tag_takes_its_sites() -> None:
    names = DEFAULT_OWNER_TAGS
    site = _record("api", tags={"Team": "payments"})
    bare = _record("api", "staging")
    own = _record("api", "qa", {"OWNER": "qa-crew"})
    other_group = _record("API", "x", rg="other")  # same app name, another group: not the same site
    error = InventoryError(f"/subscriptions/{SUB_A}", SUB_A, "boom")
    error = InventoryError(f"/subscriptions/{SUB_A}/resourceGroups/rg", SUB_A, "boom")
    records = [bare, own, other_group, site]  # a slot may come before its site: the order does not matter
    listed: dict[str, object] = {resource_key(r.resource_id): r for r in records}
    listed[resource_key(error.scope_id)] = finding = error_finding(error)
    set_owners(listed, names)
    assert [listed[resource_key(r.resource_id)].owner for r in records] == ["payments", "qa-crew", "", "payments"]  # type: ignore[attr-defined]
    assert listed[resource_key(error.scope_id)] is finding
    # an owner already set (read by GET with its site's) is kept
    read = {resource_key(bare.resource_id): replace(bare, owner="from-get")}
    set_owners(read, names)
    assert read[resource_key(bare.resource_id)].owner == "from-get"
    # a slot of a site named like a path keyword, in a group named so: found by position
    odd_site = _record("slots", tags={"owner": "odd"}, rg="sites")
    odd_slot = _record("slots", "sites", rg="sites")
    odd = {resource_key(r.resource_id): r for r in (odd_slot, odd_site)}
    set_owners(odd, names)
    assert odd[resource_key(odd_slot.resource_id)].owner == "odd"
    resolver = OwnerResolver(names)
    assert resolver.resolve(_record("Api", "late", rg="RG")).owner == ""  # its site unseen: nothing to inherit


def test_owner_tags_setting() -> None:
    assert load_settings(URI).owner_tags == DEFAULT_OWNER_TAGS == ("owner", "team", "contact")
    assert load_settings({**URI, "AUDIT_OWNER_TAGS": " , "}).owner_tags == DEFAULT_OWNER_TAGS
    custom = load_settings({**URI, "AUDIT_OWNER_TAGS": "app-owner, Owner,owner ,cost center"})
    assert custom.owner_tags == ("app-owner", "Owner", "cost center")
    with pytest.raises(ConfigError, match="AUDIT_OWNER_TAGS"):
        load_settings({**URI, "AUDIT_OWNER_TAGS": "owner,team/lead"})
