"""App Service resource ids, parsed by position.

A site id is ``/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}``,
optionally followed by ``/slots/{slot}``. Names are free to equal any of the path's keywords: a
resource group called ``slots`` or an app called ``sites`` is legal in ARM. So the keywords are
matched at their fixed positions only (case-insensitively, as ARM does), never searched for: a
search for the first ``slots`` segment turned every app in a group named ``slots`` into a slot and
an app named ``slots`` into an ``IndexError``. Whether a resource is a slot is read from its
``type`` or that positional suffix, never from a substring of the id.

Pure functions only: no I/O, no logging. An id that does not have this shape raises
:class:`ArmIdError`, which the inventory turns into an ERROR row for that one resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from .errors import ArmIdError
from .names import fold

SITE_TYPE = "Microsoft.Web/sites"
SLOT_TYPE = "Microsoft.Web/sites/slots"

#: The literal segments of a site id, lower-cased, by position (``None``: a name).
_SITE_SHAPE: tuple[str | None, ...] = (
    "subscriptions",
    None,
    "resourcegroups",
    None,
    "providers",
    "microsoft.web",
    "sites",
    None,
)
_SLOT_SUFFIX: tuple[str | None, ...] = ("slots", None)


@dataclass(frozen=True, slots=True)
class SiteId:
    """The names in a site or slot id, spelled as the id spelled them (``slot`` is ``""`` for a site)."""

    subscription_id: str
    resource_group: str
    app_name: str
    slot: str = ""

    @property
    def is_slot(self) -> bool:
        return bool(self.slot)


def _segments(resource_id: str) -> list[str]:
    """The id's ``/``-separated segments (one trailing ``/`` tolerated); an empty one is an error."""
    text = resource_id.strip()
    if not text.startswith("/"):
        raise ArmIdError(f"resource id {resource_id!r} does not start with '/'")
    body = text[1:-1] if text.endswith("/") else text[1:]
    parts = [unquote(part) for part in body.split("/")]
    if any(not part for part in parts):
        raise ArmIdError(f"resource id {resource_id!r} has an empty segment")
    return parts


def parse_site_id(resource_id: str) -> SiteId:
    """Split a site or slot id into its names by position, or raise :class:`ArmIdError`.

    Eight segments name a site, ten a slot; every keyword must sit at its own position
    (compared case-insensitively). Any other shape is refused rather than guessed at.
    """
    parts = _segments(resource_id)
    if len(parts) == len(_SITE_SHAPE):
        shape = _SITE_SHAPE
    elif len(parts) == len(_SITE_SHAPE) + len(_SLOT_SUFFIX):
        shape = _SITE_SHAPE + _SLOT_SUFFIX
    else:
        raise ArmIdError(
            f"resource id {resource_id!r} has {len(parts)} segments; a site id has 8 and a slot id 10 "
            "(/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}[/slots/{slot}])"
        )
    for position, (part, literal) in enumerate(zip(parts, shape, strict=True)):
        if literal is not None and fold(part) != literal:
            raise ArmIdError(
                f"resource id {resource_id!r} has {part!r} where {literal!r} belongs (segment {position + 1})"
            )
    return SiteId(parts[1], parts[3], parts[7], parts[9] if len(parts) == 10 else "")


def parse_site(resource_id: object, resource_type: object = None) -> SiteId:
    """Parse an ARM item's ``id`` and check it against its ``type`` (when it has one).

    The ``type`` decides site or slot; the id must agree with it. An item without a ``type``
    is a slot exactly when its id has the positional ``/slots/{slot}`` suffix.
    """
    if not isinstance(resource_id, str) or not resource_id.strip():
        raise ArmIdError(f"the item has no resource id (id is {resource_id!r})")
    parsed = parse_site_id(resource_id)
    kind = fold(resource_type.strip()) if isinstance(resource_type, str) else ""
    if not kind:
        return parsed
    if kind not in (fold(SITE_TYPE), fold(SLOT_TYPE)):
        raise ArmIdError(f"resource {resource_id!r} has type {resource_type!r}, not {SITE_TYPE} or {SLOT_TYPE}")
    if (kind == fold(SLOT_TYPE)) != parsed.is_slot:
        shape = "slot" if parsed.is_slot else "site"
        raise ArmIdError(f"resource {resource_id!r} has type {resource_type!r} but its id names a {shape}")
    return parsed


def subscription_of(resource_id: object) -> str:
    """The subscription an id names in its first two segments, or ``""`` (for ids that do not parse)."""
    if not isinstance(resource_id, str):
        return ""
    parts = resource_id.strip().lstrip("/").split("/")
    if len(parts) >= 2 and fold(parts[0]) == "subscriptions" and parts[1]:
        return unquote(parts[1])
    return ""
