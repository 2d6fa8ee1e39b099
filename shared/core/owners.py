"""Owners: who to chase about a finding, read from resource tags.

Azure has no owner field; organisations record owners in tags whose names vary (``owner``,
``Owner``, ``team``, ``contact``...). ``AUDIT_OWNER_TAGS`` lists the names to try, in order and
case-insensitively. A deployment slot usually carries no tags of its own, so a slot without an
owner tag takes its site's owner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import replace
from typing import Any

from .models import SiteRecord
from .names import fold


def owner_from_tags(tags: Iterable[tuple[str, str]], names: Sequence[str]) -> str:
    """The value of the first tag in ``names`` that the resource has (any casing), ``""`` if none.

    A tag with a blank value does not count, so the next name is tried. Should a resource carry
    one tag name in two casings, the one sorting first wins, so the answer never depends on order.
    """
    found: dict[str, str] = {}
    for key, value in sorted(tags):
        text = str(value).strip()
        if text:
            found.setdefault(fold(str(key).strip()), text)
    for name in names:
        owner = found.get(fold(name))
        if owner:
            return owner
    return ""


def _site_key(record: SiteRecord) -> tuple[str, str, str]:
    return fold(record.subscription_id), fold(record.resource_group), fold(record.app_name)


class OwnerResolver:
    """Sets ``owner`` on records read one by one (the change poll's GETs), remembering each site's
    owner it was told for its slots (a listing's records are given theirs by :func:`set_owners`)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._sites: dict[tuple[str, str, str], str] = {}

    def learn(self, record: SiteRecord) -> str:
        """Remember a site's owner (from its own tags) and return it."""
        owner = owner_from_tags(record.tags, self.names)
        self._remember(_site_key(record), owner)
        return owner

    def learn_owner(self, subscription_id: str, resource_group: str, app_name: str, owner: str) -> None:
        """Remember a site's owner read elsewhere (the change poll reads a slot's site by GET)."""
        self._remember((fold(subscription_id), fold(resource_group), fold(app_name)), owner)

    def _remember(self, key: tuple[str, str, str], owner: str) -> None:
        """Only sites with an owner are kept (one entry per site of a subscription while it is listed)."""
        if owner:
            self._sites[key] = owner
        else:
            self._sites.pop(key, None)

    def resolve(self, record: SiteRecord) -> SiteRecord:
        """The record with its owner: its own tag, else (for a slot) its site's."""
        if record.slot:
            owner = owner_from_tags(record.tags, self.names) or self._sites.get(_site_key(record), "")
        else:
            owner = self.learn(record)
        return replace(record, owner=owner) if owner != record.owner else record


def set_owners(listed: MutableMapping[str, Any], names: Sequence[str]) -> None:
    """Set ``owner`` on the records of ``listed`` (by resource key; other values pass), in place: a
    site's from its tags, a slot's from its own tags, else from its site's record among them. A
    record whose owner is already set keeps it (read by GET, where its site's owner was read too).

    The inventories hand records over as they list them; owners are set where a subscription is
    compared with its state, whole or a slice at a time, and a slice holds each site with its slots
    (``shared.core.keys.site_key``): nothing remembers a subscription's owners whole."""
    resolver = OwnerResolver(names)
    for value in listed.values():
        if isinstance(value, SiteRecord) and not value.slot:
            if value.owner:
                resolver.learn_owner(value.subscription_id, value.resource_group, value.app_name, value.owner)
            else:
                resolver.learn(value)
    for key, value in listed.items():
        if isinstance(value, SiteRecord) and not value.owner:
            listed[key] = resolver.resolve(value)


#: Longest ``Tags`` value stored on a result row (a table string property holds 32K characters).
MAX_TAGS_CHARS = 16_000


def tags_text(tags: Iterable[tuple[str, str]]) -> str:
    """The resource's tags as a JSON object (sorted), for the ``Tags`` column and the SIEM export.

    Tags past :data:`MAX_TAGS_CHARS` are left out whole (never cut mid-value): a resource has at
    most 50 tags, so this only bites on values that are themselves documents.
    """
    everything = {str(key): str(value) for key, value in sorted(tags)}
    text = json.dumps(everything, ensure_ascii=False)
    if len(text) <= MAX_TAGS_CHARS:
        return text if everything else ""
    kept: dict[str, str] = {}
    for key, value in sorted(tags):
        kept[str(key)] = str(value)
        if len(json.dumps(kept, ensure_ascii=False)) > MAX_TAGS_CHARS:
            del kept[str(key)]
    return json.dumps(kept, ensure_ascii=False) if kept else ""
