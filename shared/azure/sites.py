"""The site-record mapping: one ARM site or slot JSON object to the record the evaluation reads,
or to an ERROR for that item alone; and a short, secret-free description of an SDK error.

This is where ARM's JSON becomes a record, so every string taken from it is made valid text here
(:func:`~shared.core.models.valid_text`: a lone UTF-16 surrogate becomes U+FFFD)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import HttpResponseError

from ..core.arm_ids import parse_site, subscription_of
from ..core.errors import ArmIdError, one_line
from ..core.models import InventoryError, SiteRecord, valid_text
from ..core.names import same

#: The one answer that proves a resource is gone: a 404 whose ARM error code is this. Any other 404
#: (``SubscriptionNotFound``, ``ResourceGroupNotFound``, ``ParentResourceNotFound``, or none at all,
#: as a gateway or an unknown route answers) says something about another scope, or nothing: the
#: resource may well exist, and retiring it would page its failure as new when it is read again.
OWN_NOT_FOUND = "ResourceNotFound"


def error_code(exc: BaseException) -> str:
    """ARM's error code of an SDK error (``""`` when the answer carried none)."""
    code = getattr(getattr(exc, "error", None), "code", None)
    return code if isinstance(code, str) else ""


def confirms_gone(exc: BaseException) -> bool:
    """Whether an SDK error is the resource's own confirmed absence (see :data:`OWN_NOT_FOUND`)."""
    return (
        isinstance(exc, HttpResponseError)
        and exc.status_code == 404
        and error_code(exc).lower() == OWN_NOT_FOUND.lower()
    )


def describe_error(exc: BaseException) -> tuple[str, int | None]:
    """A short, secret-free description of an SDK error and its HTTP status."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, HttpResponseError):
        code = getattr(getattr(exc, "error", None), "code", None) or getattr(exc, "reason", "") or ""
        message = getattr(getattr(exc, "error", None), "message", None) or str(exc).splitlines()[0]
        return _text(f"HTTP {status} {code}: {message}".strip()), status
    return _text(one_line(exc, 1000)), status


def _opt_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _text(value: Any) -> str:
    """A JSON value as valid text (:func:`~shared.core.models.valid_text`: no lone surrogate survives)."""
    text = value if isinstance(value, str) else str(value)
    return text if text.isascii() else valid_text(text)


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    return _text(getattr(value, "value", value))


def _unusable(raw: Mapping[str, Any], subscription_id: str, problem: ArmIdError) -> InventoryError:
    """An ERROR for one listed item whose id cannot be used: that item is not audited, the others are.

    The row is keyed by the item's own id, so it never stands in for anything else; an item without
    an id (or whose id is the bare subscription, whose ERROR row means "subscription unreadable")
    gets a scope made from its name instead."""
    resource_id = raw.get("id")
    sub = subscription_id or subscription_of(resource_id)
    scope = resource_id.strip() if isinstance(resource_id, str) else ""
    if not scope or same(scope.rstrip("/"), f"/subscriptions/{sub}"):
        scope = f"/subscriptions/{sub}/unparsable-item/{raw.get('name') or 'unnamed'}"
    message = f"not audited: ARM listed an item whose id cannot be read as an App Service site or slot: {problem}"
    return InventoryError(scope, sub, message)


def site_record(raw: Mapping[str, Any], subscription_id: str = "") -> SiteRecord | InventoryError:
    """Map one ARM site/slot JSON object to a record, or to an ERROR for that item alone.

    Names come from the id by position (:func:`~shared.core.arm_ids.parse_site`), and site or slot
    from the item's ``type`` or that positional suffix; ``subscription_id`` is the subscription
    being listed, which owns the ERROR of an item whose id does not parse.
    """
    resource_id = raw.get("id")
    if isinstance(resource_id, str):  # every string taken from the JSON is made valid text (models.valid_text)
        resource_id = _text(resource_id)
    try:
        parsed = parse_site(resource_id, raw.get("type"))
    except ArmIdError as problem:
        return _unusable(raw, subscription_id, problem)
    props = raw.get("properties")
    props = props if isinstance(props, Mapping) else {}
    tags = raw.get("tags")
    # A subscription's records are held until its state is stored (tens of thousands in a large
    # one), and JSON decoding makes a new string for every value: the values many records share
    # (subscription, group, kind, state, location, modes) are kept once, not once per record.
    return SiteRecord(
        resource_id=str(resource_id).strip(),
        subscription_id=sys.intern(parsed.subscription_id),
        resource_group=sys.intern(parsed.resource_group),
        app_name=parsed.app_name,
        slot=sys.intern(parsed.slot),
        kind=sys.intern(_text(raw.get("kind") or "")),
        state=sys.intern(_text(props.get("state") or "")),
        location=sys.intern(_text(raw.get("location") or "")),
        client_cert_enabled=_opt_bool(props.get("clientCertEnabled")),
        client_cert_mode=_shared(_opt_str(props.get("clientCertMode"))),
        exclusion_paths=_opt_str(props.get("clientCertExclusionPaths")),
        https_only=_opt_bool(props.get("httpsOnly")),
        public_network_access=_shared(_opt_str(props.get("publicNetworkAccess"))),
        tags=tuple(sorted((_text(k), _text(v)) for k, v in tags.items())) if isinstance(tags, Mapping) else (),
    )


def _shared(value: str | None) -> str | None:
    """One copy of a string many records hold (:func:`sys.intern`; interned strings are freed with
    their last reference, so nothing outlives the run)."""
    return None if value is None else sys.intern(value)
