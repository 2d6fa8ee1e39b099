"""Site and slot ids are parsed by position: property-based round trips from ARM JSON to a result row.

Names are generated as ARM allows them (1–90 characters of unicode letters, digits and ``. _ - ( )``)
and, often, as the path's own keywords in any casing: a group called ``slots`` or an app called
``sites`` is legal and must be audited like any other. Each example goes id → record → RowKey →
result row and must come back with exactly the names it was made from.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.azure.sites import site_record
from shared.core.arm_ids import SiteId, parse_site, parse_site_id, subscription_of
from shared.core.errors import ArmIdError
from shared.core.evaluate import error_finding, evaluate
from shared.core.keys import MAX_KEY_CHARS, resource_key
from shared.core.models import InventoryError, SiteRecord
from shared.core.names import fold
from shared.core.schema import result_row

#: Deterministic and quick enough for every CI run: a fixed set of examples, no timing deadline.
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

KEYWORDS = ("slots", "sites", "providers", "resourceGroups", "subscriptions", "Microsoft.Web")
NOW = dt.datetime(2025, 6, 1, 2, 0, tzinfo=dt.UTC)


def any_casing(word: str) -> st.SearchStrategy[str]:
    """``word`` with each letter upper- or lower-cased at random."""
    flags = st.lists(st.booleans(), min_size=len(word), max_size=len(word))
    return flags.map(lambda up: "".join(c.upper() if u else c.lower() for c, u in zip(word, up, strict=True)))


NAME_CHARS = st.one_of(
    st.characters(categories=("Lu", "Ll", "Lt", "Lm", "Lo", "Nd")),
    st.sampled_from("._-()"),
)
#: A legal ARM name; a third of them are one of the path's keywords.
NAMES = st.one_of(
    st.sampled_from(KEYWORDS).flatmap(any_casing),
    st.text(NAME_CHARS, min_size=1, max_size=90),
    st.text(NAME_CHARS, min_size=1, max_size=90),
)
SUBSCRIPTIONS = st.uuids().map(str)


@st.composite
def site_ids(draw: st.DrawFn) -> tuple[str, SiteId]:
    """A site or slot id spelled with any casing of its keywords, and the names it was built from."""
    names = SiteId(draw(SUBSCRIPTIONS), draw(NAMES), draw(NAMES), draw(st.one_of(st.just(""), NAMES)))
    literal = {word: draw(any_casing(word)) for word in KEYWORDS}
    rid = (
        f"/{literal['subscriptions']}/{names.subscription_id}/{literal['resourceGroups']}/{names.resource_group}"
        f"/{literal['providers']}/{literal['Microsoft.Web']}/{literal['sites']}/{names.app_name}"
    )
    if names.slot:
        rid += f"/{literal['slots']}/{names.slot}"
    if draw(st.booleans()) and draw(st.booleans()):
        rid += "/"
    return rid, names


def arm_item(rid: str, names: SiteId, type_casing: str | None) -> dict[str, Any]:
    """The item as ARM lists it (``type_casing`` None: no ``type`` property at all)."""
    item: dict[str, Any] = {
        "id": rid,
        "name": f"{names.app_name}/{names.slot}" if names.slot else names.app_name,
        "kind": "app",
        "location": "East US",
        "properties": {"state": "Running", "clientCertEnabled": True, "clientCertMode": "Required", "httpsOnly": True},
    }
    if type_casing is not None:
        item["type"] = type_casing
    return item


def decode_key(key: str) -> str:
    """Invert :func:`shared.core.keys.encode_key` (``/`` became ``|``; other escapes are UTF-8 ``%XX``)."""
    return unquote(key.replace("|", "/"))


@PROPERTY
@given(site=site_ids(), typed=st.booleans(), data=st.data())
@example(
    site=(
        "/subscriptions/0/resourceGroups/slots/providers/Microsoft.Web/sites/app",
        SiteId("0", "slots", "app"),
    ),
    typed=True,
    data=None,
)
@example(
    site=(
        "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Web/sites/slots",
        SiteId("0", "rg", "slots"),
    ),
    typed=False,
    data=None,
)
@example(
    site=(
        "/subscriptions/0/resourceGroups/sites/providers/Microsoft.Web/sites/sites/slots/slots",
        SiteId("0", "sites", "sites", "slots"),
    ),
    typed=True,
    data=None,
)
def test_parse_key_row_round_trip(site: tuple[str, SiteId], typed: bool, data: Any) -> None:
    rid, names = site
    assert parse_site_id(rid) == names
    kind = "Microsoft.Web/sites/slots" if names.slot else "Microsoft.Web/sites"
    type_casing = (data.draw(any_casing(kind)) if data is not None else kind) if typed else None

    record = site_record(arm_item(rid, names, type_casing), "")
    assert isinstance(record, SiteRecord), record
    assert (record.subscription_id, record.resource_group, record.app_name, record.slot) == (
        names.subscription_id,
        names.resource_group,
        names.app_name,
        names.slot,
    )
    key = resource_key(record.resource_id)
    row = result_row("20250601T020000000000Z-abcdef", evaluate(record), None, NOW, key)
    assert row["ResourceGroup"] == names.resource_group
    assert row["AppName"] == names.app_name
    assert row["Slot"] == names.slot
    assert row["ResourceType"] == ("slot" if names.slot else "site")
    assert row["SubscriptionId"] == names.subscription_id
    assert row["Status"] == "PASS"  # an audited resource, not an ERROR row
    assert row["RowKey"] == key == resource_key(fold(rid))
    assert not set(key) & set("/\\#?")
    if len(key) < MAX_KEY_CHARS - 18:  # not cut and hashed: the key reads back as the id, folded as ARM compares
        assert decode_key(key) == fold(rid.strip()).rstrip("/")


@settings(PROPERTY, max_examples=150)
@given(st.lists(site_ids(), min_size=2, max_size=5), st.lists(st.sampled_from((str.upper, str.swapcase)), max_size=5))
def test_row_keys_are_unique_per_distinct_id_as_arm_compares(sites: list[tuple[str, SiteId]], recase: list[Any]) -> None:
    ids = [rid for rid, _ in sites]
    ids += [spell(rid) for rid, spell in zip(ids, recase, strict=False)]  # the same resources, spelled again
    key_of = {rid: resource_key(rid) for rid in ids}
    for a in ids:
        for b in ids:
            same = fold(a.strip()).rstrip("/") == fold(b.strip()).rstrip("/")
            assert (key_of[a] == key_of[b]) == same, (a, b)


WRONG_WORDS = st.one_of(NAMES, st.sampled_from(("site", "slot", "Microsoft.Webs", "resourcegroup", "config")))


@PROPERTY
@given(site=site_ids(), position=st.integers(min_value=0, max_value=9), word=WRONG_WORDS)
def test_a_keyword_out_of_place_is_refused_not_guessed(site: tuple[str, SiteId], position: int, word: str) -> None:
    rid, names = site
    parts = rid.strip("/").split("/")
    literals = [i for i in (0, 2, 4, 5, 6, 8) if i < len(parts)]
    at = literals[position % len(literals)]
    expected = ("subscriptions", "resourcegroups", "providers", "microsoft.web", "sites", "slots")[
        (0, 2, 4, 5, 6, 8).index(at)
    ]
    if fold(word) == expected:
        return
    parts[at] = word
    broken = "/" + "/".join(parts)
    with pytest.raises(ArmIdError):
        parse_site_id(broken)
    error = site_record(arm_item(broken, names, None), names.subscription_id)
    assert isinstance(error, InventoryError)
    assert error.scope_id == broken and error.subscription_id == names.subscription_id
    row = result_row("run", error_finding(error), None, NOW, resource_key(error.scope_id))
    assert row["Status"] == "ERROR" and row["ResourceId"] == broken
    assert "cannot be read as an App Service site or slot" in row["Reason"]


@PROPERTY
@given(site=site_ids(), extra=st.lists(NAMES, min_size=1, max_size=3), cut=st.integers(min_value=1, max_value=7))
def test_ids_of_any_other_length_are_refused(site: tuple[str, SiteId], extra: list[str], cut: int) -> None:
    rid, _ = site
    parts = rid.strip("/").split("/")
    longer = (
        "/" + "/".join([*parts, *extra]) if len(parts) + len(extra) != 10 else "/" + "/".join([*parts, "x", "y", "z"])
    )
    shorter = "/" + "/".join(parts[:cut])
    for broken in (longer, shorter):
        with pytest.raises(ArmIdError):
            parse_site_id(broken)


@pytest.mark.parametrize(
    ("rid", "rtype", "names"),
    [
        # A group named like the slot keyword: an ordinary production site, not a slot.
        (
            "/subscriptions/s1/resourceGroups/slots/providers/Microsoft.Web/sites/web1",
            "Microsoft.Web/sites",
            ("slots", "web1", ""),
        ),
        (
            "/subscriptions/s1/resourcegroups/SLOTS/providers/microsoft.web/sites/web1/slots/qa",
            None,
            ("SLOTS", "web1", "qa"),
        ),
        # An app named "slots" (used to raise IndexError and cost the whole subscription).
        (
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/slots",
            "Microsoft.Web/sites",
            ("rg", "slots", ""),
        ),
        # A group named "Sites" (the app name used to be read from the wrong segment).
        (
            "/subscriptions/s1/resourceGroups/Sites/providers/Microsoft.Web/sites/sites/slots/slots",
            "microsoft.web/sites/slots",
            ("Sites", "sites", "slots"),
        ),
        (
            "/subscriptions/s1/resourceGroups/providers/providers/Microsoft.Web/sites/subscriptions/slots/resourceGroups",
            "Microsoft.Web/sites/slots",
            ("providers", "subscriptions", "resourceGroups"),
        ),
    ],
)
def test_keyword_names_are_ordinary_names(rid: str, rtype: str | None, names: tuple[str, str, str]) -> None:
    record = site_record({"id": rid, "type": rtype, "properties": {}}, "s1")
    assert isinstance(record, SiteRecord)
    assert (record.resource_group, record.app_name, record.slot) == names


@pytest.mark.parametrize(
    ("item", "why"),
    [
        (
            {
                "id": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app",
                "type": "Microsoft.Web/sites/slots",
            },
            "names a site",
        ),
        (
            {
                "id": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/qa",
                "type": "Microsoft.Web/sites",
            },
            "names a slot",
        ),
        (
            {
                "id": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/serverfarms/plan",
                "type": "Microsoft.Web/serverfarms",
            },
            "'serverfarms' where 'sites' belongs",
        ),
        (
            {
                "id": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app",
                "type": "Microsoft.Web/staticSites",
            },
            "not Microsoft.Web/sites",
        ),
        (
            {"id": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app/config/web"},
            "where 'slots' belongs",
        ),
        ({"id": "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites//slots/qa"}, "empty segment"),
        ({"id": "subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app"}, "does not start with '/'"),
    ],
)
def test_unusable_items_are_an_error_for_that_item(item: dict[str, Any], why: str) -> None:
    found = site_record(item, "s1")
    assert isinstance(found, InventoryError)
    assert found.scope_id == item["id"] and found.subscription_id == "s1"
    assert why in found.message


@pytest.mark.parametrize("rid", [None, "", 7, "/subscriptions/s1", "/subscriptions/S1/"])
def test_an_item_without_a_usable_id_gets_its_own_scope_never_the_subscriptions(rid: Any) -> None:
    found = site_record({"id": rid, "name": "web1", "type": "Microsoft.Web/sites"}, "s1")
    assert isinstance(found, InventoryError)
    # the subscription's own scope on an ERROR row means "subscription unreadable": never reuse it
    assert found.scope_id.lower() != "/subscriptions/s1" and found.scope_id.startswith("/subscriptions/s1/")
    assert "web1" in found.scope_id and found.subscription_id == "s1"


def test_subscription_of_reads_only_the_first_two_segments() -> None:
    assert subscription_of("/subscriptions/abc/anything/else") == "abc"
    assert subscription_of("/SUBSCRIPTIONS/abc") == "abc"
    assert subscription_of("/tenants/abc") == subscription_of(None) == subscription_of("/subscriptions/") == ""


def test_parse_site_checks_type_against_the_id() -> None:
    rid = "/subscriptions/s/resourceGroups/Slots/providers/Microsoft.Web/sites/a/SLOTS/b"
    assert parse_site(rid, "MICROSOFT.WEB/SITES/SLOTS") == SiteId("s", "Slots", "a", "b")
    assert parse_site(rid, None) == parse_site(rid, "") == SiteId("s", "Slots", "a", "b")
    with pytest.raises(ArmIdError, match="no resource id"):
        parse_site(None, "Microsoft.Web/sites")
