"""RowKeys derived from resource ids: valid for Table Storage, stable, case-insensitive."""

from __future__ import annotations

import re

from shared.core.keys import MAX_KEY_CHARS, encode_key, odata_quote, resource_key, site_key

FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def test_resource_key_is_valid_and_case_insensitive() -> None:
    rid = "/subscriptions/ABC/resourceGroups/rg-café-(ü)_x./providers/Microsoft.Web/sites/App1/slots/Staging"
    key = resource_key(rid)
    assert not FORBIDDEN.search(key)
    assert key == resource_key(rid.lower()) == resource_key(rid.upper().replace("CAFÉ", "café"))
    assert "café" in key  # readable: unicode is kept


def test_forbidden_characters_are_escaped_reversibly() -> None:
    values = ["a/b", "a|b", "a%7Cb", "a#b", "a?b", "a\\b", "a\tb", "a\x85b", "a'b"]
    keys = [encode_key(v) for v in values]
    assert len(set(keys)) == len(values)
    for key in keys:
        assert not FORBIDDEN.search(key)


def test_long_ids_are_capped_and_stay_distinct() -> None:
    base = "/subscriptions/x/resourceGroups/" + "r" * 90 + "/providers/Microsoft.Web/sites/" + "é" * 200
    a, b = resource_key(base + "/slots/one"), resource_key(base + "/slots/two")
    assert len(a) <= MAX_KEY_CHARS and len(b) <= MAX_KEY_CHARS
    assert a != b


def test_odata_quote() -> None:
    assert odata_quote("it's") == "'it''s'"


def test_a_slots_site_key_is_read_by_position() -> None:
    base = "/subscriptions/S/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}"
    for rg, app, slot in [
        ("rg", "api", "staging"),
        ("slots", "sites", "slots"),
        ("a|b", "x", "y|z"),
        ("Ünï", "sites", "subscriptions"),
    ]:
        site = base.format(rg=rg, app=app)
        assert site_key(resource_key(f"{site}/slots/{slot}")) == resource_key(site)
        assert site_key(resource_key(site)) == resource_key(site)  # a site is its own
    # anything else is its own key: a group, the subscription, an item of another type or depth
    for other in [
        "/subscriptions/S",
        "/subscriptions/S/resourceGroups/rg",
        "/subscriptions/S/resourceGroups/rg/providers/Microsoft.Web/sites/a/config/web",
        "/subscriptions/S/resourceGroups/rg/providers/Microsoft.Web/sites/a/slots/b/config/web",
        "/subscriptions/S/resourceGroups/rg/providers/Microsoft.Web/serverfarms/a/slots/b",
    ]:
        assert site_key(resource_key(other)) == resource_key(other)
