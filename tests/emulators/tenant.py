"""In-memory model of an Azure tenant's App Services, plus the test oracle.

The ARM emulator serves JSON built from this model, and tests mutate it between audit runs (add or
remove a site, flip a client-certificate setting, disable a subscription). Every site and slot
carries ``expected_status``/``expected_mode``: the verdict the audit must reach, computed by a small
rule table written here independently of the product so that a shared bug cannot hide itself.

Records are plain ``__slots__`` objects and JSON is produced per page by the emulator, so a tenant of
100,000 sites and 30,000 slots fits in a few dozen MB and is generated in a few seconds.
"""

from __future__ import annotations

import math
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar, cast

# ARM compares names with .NET's OrdinalIgnoreCase; shared.core.names.fold is that rule, pinned by
# tests/unit/test_names.py against Java's UnicodeData simple case mapping and .NET's exceptions.
from shared.core.names import fold as arm_fold

__all__ = [
    "ACTIVE_STATES",
    "AWKWARD_RESOURCE_GROUPS",
    "KEYWORD_RESOURCES",
    "KINDS",
    "OMIT",
    "SUBSCRIPTION_STATES",
    "Expected",
    "Site",
    "Subscription",
    "Tenant",
    "expected_verdict",
    "generate_tenant",
    "split_exclusion_paths",
]

SUBSCRIPTION_STATES: tuple[str, ...] = ("Enabled", "Warned", "PastDue", "Disabled", "Deleted")
#: Subscription states in which resources keep running and ought to be audited.
ACTIVE_STATES: frozenset[str] = frozenset({"Enabled", "Warned", "PastDue"})

#: Every ``kind`` the generator emits; ``None`` means the property is absent (Flex Consumption does that).
KINDS: tuple[str | None, ...] = (
    "app",
    "app,linux",
    "app,linux,container",
    "api",
    "functionapp",
    "functionapp,linux",
    "functionapp,workflowapp",
    "workflowapp",
    None,
)

#: Resource-group names that stress URL quoting and id parsing. All are valid ARM names
#: (unicode letters/digits, ``_ - . ( )``, at most 90 characters, not ending in ``.``).
AWKWARD_RESOURCE_GROUPS: tuple[str, ...] = (
    "rg-café-ü",
    "RG.Prod.v2",
    "rg(legacy)",
    "rg_under_score",
    "Rg-MixedCase-(eu)",
    "リソース-グループ",
    ("rg-" + "very-long-name-" * 6 + "x" * 90)[:90],
)


#: Resources whose names are the id path's own keywords, all legal in ARM, added to the first
#: subscription when ``keyword_names`` is on: ``(resource group, app, slot or None)``. A parser that
#: searches for ``sites``/``slots`` segments mistakes them (a group ``slots`` hides its apps as slots, an
#: app ``slots`` breaks the whole subscription, a group ``Sites`` misnames its apps).
KEYWORD_RESOURCES: tuple[tuple[str, str, str | None], ...] = (
    ("slots", "subscriptions", None),
    ("slots", "Providers", None),
    ("slots", "Providers", "resourceGroups"),
    ("Sites", "slots", None),
    ("Sites", "sites", None),
    ("Sites", "sites", "slots"),
)


class _Omit:
    """Sentinel type: a key set to :data:`OMIT` in ``raw_properties_override`` is removed."""

    _instance: _Omit | None = None

    def __new__(cls) -> _Omit:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()

_T = TypeVar("_T")

_RG_NAME = re.compile(r"^[\w\-.()]{1,90}$")
_SPLIT = re.compile(r"[,;]")


def split_exclusion_paths(value: object) -> list[str]:
    """Split ``clientCertExclusionPaths`` the way the oracle reads it: on ``,`` and ``;``, blanks dropped."""
    if not isinstance(value, str):
        return []
    return [part.strip() for part in _SPLIT.split(value) if part.strip()]


def expected_verdict(
    enabled: object, mode: object, exclusion_paths: object, https_only: object = True
) -> tuple[str, str]:
    """Return ``(status, effective_mode)`` for served client-certificate properties.

    The oracle's rule table, deliberately independent of the product:

    * ``clientCertEnabled`` not exactly ``true`` -> mode ``Ignore`` whatever ``clientCertMode`` says
      (Azure reports ``Required`` on sites that never enabled client certificates);
    * otherwise the mode, defaulting to ``Required`` when absent or null;
    * ``Required`` with the exclusion path ``/`` (a prefix of every path) or with ``httpsOnly`` not
      exactly ``true`` (plain HTTP carries no certificate) -> FAIL;
    * otherwise ``Required`` and no exclusion paths -> PASS; ``Required`` with exclusion paths -> WARN;
      ``Optional``, ``OptionalInteractiveUser``, ``Ignore`` and any unknown mode -> FAIL.
    """
    if enabled is not True:
        effective = "Ignore"
    elif mode is None:
        effective = "Required"
    else:
        effective = str(mode)
    if effective == "Required":
        paths = split_exclusion_paths(exclusion_paths)
        if "/" in paths or https_only is not True:
            return "FAIL", effective
        return ("WARN" if paths else "PASS"), effective
    return "FAIL", effective


class Expected(NamedTuple):
    """One oracle row: what the audit must report for one site or slot."""

    id: str
    subscription_id: str
    resource_group: str
    site: str
    slot: str | None
    kind: str | None
    status: str
    mode: str


_CASING_PRESETS: dict[str, Callable[[str, str], str]] = {}


def _upper_rg(site_id: str, rg: str) -> str:
    return site_id.replace(f"/resourceGroups/{rg}/", f"/resourceGroups/{rg.upper()}/", 1)


def _lower_rg(site_id: str, rg: str) -> str:
    return site_id.replace(f"/resourceGroups/{rg}/", f"/resourcegroups/{rg.lower()}/", 1)


def _lower_segments(site_id: str, rg: str) -> str:
    return site_id.replace("/resourceGroups/", "/resourcegroups/", 1).replace(
        "/providers/Microsoft.Web/", "/providers/microsoft.web/", 1
    )


_CASING_PRESETS.update(
    {
        "upper-rg": _upper_rg,
        "lower-rg": _lower_rg,
        "lower-segments": _lower_segments,
        "lower": lambda site_id, _rg: site_id.lower(),
    }
)

#: Route kinds on which a string ``id_casing`` preset applies. The subscription-wide list keeps the
#: canonical id so the same resource shows two spellings across APIs, which is what ARM does.
CASING_ROUTES: frozenset[str] = frozenset({"rg_sites_list", "slots_list", "site_get"})

_SITE_FIELDS = frozenset(
    {
        "kind",
        "client_cert_enabled",
        "client_cert_mode",
        "exclusion_paths",
        "https_only",
        "public_network_access",
        "location",
        "state",
        "raw_properties_override",
        "omit_properties",
        "omit_properties_on_get",
        "id_casing",
        "tags",
    }
)


class Site:
    """A production site (``slot_name is None``) or a deployment slot of one.

    ``id_casing`` makes ARM spell the id differently on some routes: a preset name (``"upper-rg"``,
    ``"lower-rg"``, ``"lower-segments"``, ``"lower"``) applied on the per-resource-group list, the slot
    list and GET, or a callable ``(canonical_id, route_kind) -> id`` for full control. Slots inherit
    their site's casing unless they set their own.

    ``omit_properties`` drops ``properties`` from list answers (GET still has them, as a product that
    falls back to ``web_apps.get`` would see); ``omit_properties_on_get`` drops them from GET too.
    ``raw_properties_override`` is merged over the generated ``properties``; a value of :data:`OMIT`
    removes that key. The oracle follows whatever the override makes ARM serve.
    """

    __slots__ = (
        "_slots",
        "client_cert_enabled",
        "client_cert_mode",
        "exclusion_paths",
        "https_only",
        "id_casing",
        "kind",
        "location",
        "name",
        "omit_properties",
        "omit_properties_on_get",
        "parent",
        "public_network_access",
        "raw_properties_override",
        "resource_group",
        "slot_name",
        "state",
        "subscription",
        "tags",
    )

    def __init__(
        self,
        subscription: Subscription,
        resource_group: str,
        name: str,
        slot_name: str | None = None,
        parent: Site | None = None,
        *,
        kind: str | None = "app",
        client_cert_enabled: bool | None = False,
        client_cert_mode: str | None = "Required",
        exclusion_paths: str | None = None,
        https_only: bool = True,
        public_network_access: str | None = None,
        location: str = "East US",
        state: str = "Running",
        raw_properties_override: Mapping[str, Any] | None = None,
        omit_properties: bool = False,
        omit_properties_on_get: bool = False,
        id_casing: str | Callable[[str, str], str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(id_casing, str) and id_casing not in _CASING_PRESETS:
            raise ValueError(f"unknown id_casing preset {id_casing!r}; known: {sorted(_CASING_PRESETS)}")
        self.subscription = subscription
        self.resource_group = resource_group
        self.name = name
        self.slot_name = slot_name
        self.parent = parent
        self.kind = kind
        self.client_cert_enabled = client_cert_enabled
        self.client_cert_mode = client_cert_mode
        self.exclusion_paths = exclusion_paths
        self.https_only = https_only
        self.public_network_access = public_network_access
        self.location = location
        self.state = state
        self.raw_properties_override = dict(raw_properties_override) if raw_properties_override else None
        self.omit_properties = omit_properties
        self.omit_properties_on_get = omit_properties_on_get
        self.id_casing = id_casing
        self.tags = dict(tags) if tags is not None else None  # None: ARM sends no "tags" at all
        self._slots: dict[str, Site] | None = None

    # -- identity -----------------------------------------------------------------------------
    @property
    def is_slot(self) -> bool:
        return self.slot_name is not None

    @property
    def site_name(self) -> str:
        """Name of the production site (the parent's name for a slot)."""
        return self.name

    @property
    def full_name(self) -> str:
        """ARM ``name``: ``site`` or ``site/slot``."""
        return self.name if self.slot_name is None else f"{self.name}/{self.slot_name}"

    @property
    def id(self) -> str:
        """Canonical ARM id (the casing the resource was created with)."""
        base = (
            f"/subscriptions/{self.subscription.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Web/sites/{self.name}"
        )
        return base if self.slot_name is None else f"{base}/slots/{self.slot_name}"

    @property
    def key(self) -> str:
        """Case-insensitive identity (ARM ids are case-insensitive): the lower-cased canonical id."""
        return self.id.lower()

    @property
    def resource_type(self) -> str:
        return "Microsoft.Web/sites" if self.slot_name is None else "Microsoft.Web/sites/slots"

    def served_id(self, route_kind: str) -> str:
        """The id ARM returns for this resource on ``route_kind`` (see ``id_casing``)."""
        casing = self.id_casing
        if casing is None and self.parent is not None:
            casing = self.parent.id_casing
        canonical = self.id
        if casing is None:
            return canonical
        if callable(casing):
            return casing(canonical, route_kind)
        if route_kind not in CASING_ROUTES:
            return canonical
        return _CASING_PRESETS[casing](canonical, self.resource_group)

    @property
    def slots(self) -> list[Site]:
        """Deployment slots of a production site, in creation order (a snapshot)."""
        return list(self._slots.values()) if self._slots else []

    # -- served properties and oracle ---------------------------------------------------------
    def client_cert_properties(self) -> dict[str, Any]:
        """The three client-certificate properties as ARM serves them (absent keys omitted)."""
        props: dict[str, Any] = {"clientCertEnabled": self.client_cert_enabled}
        if self.client_cert_mode is not None:
            props["clientCertMode"] = self.client_cert_mode
        if self.exclusion_paths is not None:
            props["clientCertExclusionPaths"] = self.exclusion_paths
        if self.client_cert_enabled is None:
            del props["clientCertEnabled"]
        override = self.raw_properties_override
        if override:
            for key in ("clientCertEnabled", "clientCertMode", "clientCertExclusionPaths"):
                if key in override:
                    if override[key] is OMIT:
                        props.pop(key, None)
                    else:
                        props[key] = override[key]
        return props

    def _verdict(self) -> tuple[str, str]:
        if self.omit_properties and self.omit_properties_on_get:
            return expected_verdict(None, None, None, None)
        props = self.client_cert_properties()
        return expected_verdict(
            props.get("clientCertEnabled"),
            props.get("clientCertMode"),
            props.get("clientCertExclusionPaths"),
            self.served_https_only(),
        )

    def served_https_only(self) -> object:
        """``httpsOnly`` as ARM serves it (``raw_properties_override`` may change or drop it)."""
        override = self.raw_properties_override or {}
        if "httpsOnly" in override:
            return None if override["httpsOnly"] is OMIT else override["httpsOnly"]
        return self.https_only

    @property
    def expected_status(self) -> str:
        """Oracle: ``PASS``, ``WARN`` or ``FAIL`` (recomputed after :meth:`update`)."""
        return self._verdict()[0]

    @property
    def expected_mode(self) -> str:
        """Oracle: effective mode (``Required``, ``Optional``, ``OptionalInteractiveUser``, ``Ignore`` or
        the unknown string as served)."""
        return self._verdict()[1]

    def expected(self) -> Expected:
        status, mode = self._verdict()
        return Expected(
            id=self.id,
            subscription_id=self.subscription.subscription_id,
            resource_group=self.resource_group,
            site=self.name,
            slot=self.slot_name,
            kind=self.kind,
            status=status,
            mode=mode,
        )

    # -- mutation -----------------------------------------------------------------------------
    def update(self, **changes: Any) -> Site:
        """Change settings (same keyword names as ``add_site``); the next ARM answer reflects them."""
        unknown = set(changes) - _SITE_FIELDS
        if unknown:
            raise TypeError(f"unknown site field(s): {sorted(unknown)}")
        casing = changes.get("id_casing")
        if isinstance(casing, str) and casing not in _CASING_PRESETS:
            raise ValueError(f"unknown id_casing preset {casing!r}; known: {sorted(_CASING_PRESETS)}")
        with self.subscription.tenant.lock:
            for field, value in changes.items():
                if field in ("raw_properties_override", "tags") and value is not None:
                    value = dict(value)
                setattr(self, field, value)
            self.subscription.tenant._touch()
            self.subscription.tenant.record_change(self, "Update")
        return self

    def add_slot(self, slot_name: str, **settings: Any) -> Site:
        """Add a deployment slot; settings default like ``add_site`` (kind defaults to the site's)."""
        if self.slot_name is not None:
            raise ValueError("slots cannot have slots")
        settings.setdefault("kind", self.kind)
        settings.setdefault("location", self.location)
        with self.subscription.tenant.lock:
            slot = self._new_slot(slot_name, settings)
            self.subscription.tenant._touch()
            self.subscription.tenant.record_change(slot, "Create")
        return slot

    def _new_slot(self, slot_name: str, settings: Mapping[str, Any]) -> Site:
        if self._slots is None:
            self._slots = {}
        key = slot_name.lower()
        if key in self._slots:
            raise ValueError(f"slot {slot_name!r} already exists on {self.name!r}")
        slot = Site(self.subscription, self.resource_group, self.name, slot_name, self, **settings)
        self._slots[key] = slot
        return slot

    def get_slot(self, slot_name: str) -> Site | None:
        return self._slots.get(slot_name.lower()) if self._slots else None

    def remove_slot(self, slot_name: str) -> None:
        with self.subscription.tenant.lock:
            if not self._slots or slot_name.lower() not in self._slots:
                raise KeyError(slot_name)
            slot = self._slots.pop(slot_name.lower())
            self.subscription.tenant._touch()
            self.subscription.tenant.record_change(slot, "Delete")

    def __repr__(self) -> str:
        return f"Site({self.full_name!r}, rg={self.resource_group!r}, {self.expected_status})"


class Subscription:
    """A subscription with resource groups holding sites (slots hang off their sites)."""

    def __init__(self, tenant: Tenant, subscription_id: str, display_name: str, state: str) -> None:
        self.tenant = tenant
        self.subscription_id = subscription_id
        self.display_name = display_name
        self.state = state
        #: RG name folded as ARM compares names -> (RG name as created, {lower site name -> Site})
        self._rgs: dict[str, tuple[str, dict[str, Site]]] = {}
        self._cache: dict[str, tuple[int, Any]] = {}

    def set_state(self, state: str) -> None:
        """Change the subscription state (e.g. to ``Disabled``) between runs."""
        if state not in SUBSCRIPTION_STATES:
            raise ValueError(f"state must be one of {SUBSCRIPTION_STATES}")
        with self.tenant.lock:
            self.state = state
            self.tenant._touch()

    def add_resource_group(self, name: str) -> str:
        """Create an (empty) resource group; returns its name. Idempotent, case-insensitive like ARM."""
        with self.tenant.lock:
            rg = self._ensure_rg(name)
            self.tenant._touch()
        return rg

    def _ensure_rg(self, name: str) -> str:
        folded = arm_fold(name)
        existing = self._rgs.get(folded)
        if existing is not None:
            return existing[0]
        if not _RG_NAME.match(name) or name.endswith("."):
            raise ValueError(f"invalid ARM resource-group name {name!r}")
        self._rgs[folded] = (name, {})
        return name

    def add_site(self, resource_group: str, name: str, **settings: Any) -> Site:
        """Create a production site in ``resource_group`` (created if missing).

        Keyword settings: ``kind``, ``client_cert_enabled``, ``client_cert_mode`` (``None`` omits the
        property), ``exclusion_paths``, ``https_only``, ``public_network_access``, ``location``,
        ``state``, ``raw_properties_override``, ``omit_properties``, ``omit_properties_on_get``,
        ``id_casing`` (see :class:`Site`).
        """
        with self.tenant.lock:
            site = self._add_site(resource_group, name, settings)
            self.tenant._touch()
            self.tenant.record_change(site, "Create")
        return site

    def _add_site(self, resource_group: str, name: str, settings: Mapping[str, Any]) -> Site:
        rg = self._ensure_rg(resource_group)
        sites = self._rgs[arm_fold(rg)][1]
        if name.lower() in sites:
            raise ValueError(f"site {name!r} already exists in {rg!r}")
        site = Site(self, rg, name, **settings)
        sites[name.lower()] = site
        return site

    def remove_site(self, site_or_rg: Site | str, name: str | None = None) -> None:
        """Delete a site (and its slots): ``remove_site(site)`` or ``remove_site(rg, name)``."""
        if isinstance(site_or_rg, Site):
            rg, site_name = site_or_rg.resource_group, site_or_rg.name
        else:
            if name is None:
                raise TypeError("remove_site(rg, name) needs a site name")
            rg, site_name = site_or_rg, name
        with self.tenant.lock:
            entry = self._rgs.get(arm_fold(rg))
            if entry is None or site_name.lower() not in entry[1]:
                raise KeyError(f"{rg}/{site_name}")
            site = entry[1].pop(site_name.lower())
            self.tenant._touch()
            self.tenant.record_change(site, "Delete")

    def get_site(self, resource_group: str, name: str) -> Site | None:
        """Case-insensitive lookup, as ARM does."""
        entry = self._rgs.get(arm_fold(resource_group))
        return entry[1].get(name.lower()) if entry else None

    def resource_group_name(self, name: str) -> str | None:
        """The RG's name as created, or None when it does not exist."""
        entry = self._rgs.get(arm_fold(name))
        return entry[0] if entry else None

    @property
    def resource_groups(self) -> list[str]:
        return [entry[0] for entry in list(self._rgs.values())]

    def _cached(self, key: str, build: Callable[[], _T]) -> _T:
        """Memoise a snapshot until the tenant changes (paging a 100k-site list re-slices, not rebuilds)."""
        version = self.tenant.version
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return cast(_T, hit[1])
        with self.tenant.lock:
            version = self.tenant.version
            value = build()
            self._cache[key] = (version, value)
        return value

    @property
    def sites(self) -> list[Site]:
        """Production sites in creation order per RG (a cached snapshot; do not mutate)."""
        return self._cached("sites", lambda: [s for _, sites in self._rgs.values() for s in sites.values()])

    def sites_in_group(self, resource_group: str, *, include_slots: bool = False) -> list[Site] | None:
        """Snapshot of one RG's sites (each followed by its slots when asked); None if no such RG."""
        folded = arm_fold(resource_group)
        if folded not in self._rgs:
            return None

        def build() -> list[Site]:
            entry = self._rgs.get(folded)
            if entry is None:
                return []
            out: list[Site] = []
            for site in entry[1].values():
                out.append(site)
                if include_slots and site._slots:
                    out.extend(site._slots.values())
            return out

        return self._cached(f"rg:{folded}:{include_slots}", build)

    def iter_resources(self) -> Iterator[Site]:
        """Every site followed by its slots."""
        for site in self.sites:
            yield site
            if site._slots:
                yield from list(site._slots.values())

    def __repr__(self) -> str:
        return f"Subscription({self.subscription_id!r}, {self.display_name!r}, {self.state})"


class ResourceChange(NamedTuple):
    """One row of Resource Graph's ``resourcechanges`` table (the fields the product reads)."""

    timestamp: datetime
    target_id: str
    target_type: str
    change_type: str  # Create, Update, Delete
    change_id: str


class Tenant:
    """The root of the model. ``lock`` guards mutation; readers take snapshots (lists) under it."""

    def __init__(self, tenant_id: str | None = None) -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.lock = threading.RLock()
        self.version = 0
        self._subs: dict[str, Subscription] = {}
        self.changes: list[ResourceChange] | None = None  # see start_change_log
        self.change_clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _touch(self) -> None:
        self.version += 1

    # -- change log (Resource Graph's resourcechanges) ---------------------------------------------
    def start_change_log(self, clock: Callable[[], datetime] | None = None) -> list[ResourceChange]:
        """Record every later create, update and delete of a site or slot, stamped by ``clock``
        (default: now, UTC), as Resource Graph's ``resourcechanges`` table lists them."""
        self.changes = []
        self.change_clock = clock or (lambda: datetime.now(UTC))
        return self.changes

    def record_change(self, site: Site, change_type: str) -> None:
        if self.changes is None:
            return
        self.changes.append(
            ResourceChange(self.change_clock(), site.id, site.resource_type, change_type, str(uuid.uuid4()))
        )

    def add_subscription(
        self, subscription_id: str | None = None, display_name: str | None = None, state: str = "Enabled"
    ) -> Subscription:
        """Add a subscription (random id when none is given)."""
        if state not in SUBSCRIPTION_STATES:
            raise ValueError(f"state must be one of {SUBSCRIPTION_STATES}")
        sub_id = subscription_id or str(uuid.uuid4())
        with self.lock:
            if sub_id.lower() in self._subs:
                raise ValueError(f"subscription {sub_id} already exists")
            sub = Subscription(self, sub_id, display_name or f"Subscription {len(self._subs) + 1}", state)
            self._subs[sub_id.lower()] = sub
            self._touch()
        return sub

    def remove_subscription(self, subscription_id: str) -> None:
        with self.lock:
            del self._subs[subscription_id.lower()]
            self._touch()

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    def get_subscription(self, subscription_id: str) -> Subscription | None:
        return self._subs.get(subscription_id.lower())

    def iter_resources(self, states: frozenset[str] | set[str] | None = None) -> Iterator[Site]:
        """Every site and slot, optionally only in subscriptions whose state is in ``states``."""
        for sub in self.subscriptions:
            if states is None or sub.state in states:
                yield from sub.iter_resources()

    def expected(self, states: frozenset[str] | set[str] | None = ACTIVE_STATES) -> dict[str, Expected]:
        """Oracle rows keyed by lower-cased canonical id (default: active subscriptions only)."""
        return {site.key: site.expected() for site in self.iter_resources(states)}

    def counts(self) -> dict[str, int]:
        """Numbers of subscriptions, resource groups, sites and slots (all states)."""
        subs = self.subscriptions
        sites = sum(len(s.sites) for s in subs)
        slots = sum(len(site._slots or ()) for s in subs for site in s.sites)
        rgs = sum(len(s._rgs) for s in subs)
        return {"subscriptions": len(subs), "resource_groups": rgs, "sites": sites, "slots": slots}


# ---------------------------------------------------------------------------------------------
# Deterministic generator
# ---------------------------------------------------------------------------------------------

#: (client_cert_enabled, client_cert_mode, exclusion_paths, weight). Covers every oracle branch.
PROFILES: tuple[tuple[bool, str | None, str | None, int], ...] = (
    (True, "Required", None, 30),
    (True, "Required", "/health,/status;/metrics", 8),
    (True, "Required", " ; , ", 2),  # blanks only -> still PASS
    (True, "Optional", None, 8),
    (True, "OptionalInteractiveUser", None, 5),
    (True, None, None, 4),  # mode absent -> Required
    (True, "Bogus", None, 2),  # unknown mode -> FAIL
    (False, "Required", None, 30),  # Azure's default: Required but not enabled -> Ignore
    (False, "Optional", None, 3),
    (False, None, None, 3),
    (False, "Required", "/health,/status;/metrics", 2),
    (True, "Required", "/api; /", 2),  # '/' exempts every path -> FAIL
)

_KIND_WEIGHTS: tuple[int, ...] = (30, 20, 8, 3, 12, 12, 3, 2, 2)
_KIND_PREFIX = {"app": "app", "api": "api", "functionapp": "func", "workflowapp": "logic"}
_LOCATIONS = ("East US", "West Europe", "North Europe", "Australia East", "Japan East", "UK South")
_SLOT_NAMES = ("staging", "qa", "dev", "blue", "green", "canary", "preview", "hotfix", "perf", "uat")
_WORDS = ("billing", "portal", "ingest", "crm", "search", "payments", "hr", "data", "edge", "iot", "ml")
_ENVS = ("prod", "dev", "test", "uat", "shared")


#: Spread exponents of :func:`generate_tenant` (the share of subscription *i* is ``1 / i**e``).
HEAVY_TAILED = 1.3
FLATTER = 0.95
SPREADS = {"heavy": HEAVY_TAILED, "flat": FLATTER}


def _prefix(kind: str | None) -> str:
    if kind is None:
        return "site"
    if "workflowapp" in kind:
        return "logic"
    return _KIND_PREFIX.get(kind.split(",")[0], "site")


def profile_settings(
    rng: random.Random, index: int, kind: str | None, profile_cum: list[float], locations: Sequence[str] = _LOCATIONS
) -> dict[str, Any]:
    """A site's settings: the ``index``-th client-certificate profile while they last (so even a tiny
    tenant covers every branch of the oracle), then one drawn by weight; the rest drawn from ``rng``."""
    if index < len(PROFILES):
        enabled, mode, paths, _ = PROFILES[index]
    else:
        enabled, mode, paths, _ = rng.choices(PROFILES, cum_weights=profile_cum)[0]
    return {
        "kind": kind,
        "client_cert_enabled": enabled,
        "client_cert_mode": mode,
        "exclusion_paths": paths,
        "https_only": rng.random() < 0.7,
        "public_network_access": rng.choice(("Enabled", "Enabled", "Disabled", None)),
        "location": rng.choice(locations),
        "state": "Running" if rng.random() < 0.92 else "Stopped",
    }


def generate_tenant(
    seed: int,
    subscriptions: int = 5,
    sites: int = 200,
    slot_share: float = 0.3,
    *,
    tenant_id: str | None = None,
    warned_subscriptions: int = 0,
    past_due_subscriptions: int = 0,
    disabled_subscriptions: int = 0,
    deleted_subscriptions: int = 0,
    sites_per_inactive_subscription: int = 3,
    empty_resource_groups: int = 1,
    sites_per_resource_group: float = 8.0,
    awkward_names: bool = True,
    keyword_names: bool = True,
    omit_properties_share: float = 0.0,
    spread_exponent: float = HEAVY_TAILED,
) -> Tenant:
    """Build a deterministic, realistic tenant for ``seed``.

    ``subscriptions`` functional subscriptions share ``sites`` production sites with a heavy-tailed
    spread (a few big, many small); ``warned_``/``past_due_subscriptions`` of them get those (still
    functional) states. ``disabled_``/``deleted_subscriptions`` are extra, each holding
    ``sites_per_inactive_subscription`` sites. ``round(sites * slot_share)`` slots are spread over
    random sites. The first resources cycle through every client-certificate profile and kind so even
    a tiny tenant covers every oracle branch; awkward resource-group names go to the first
    subscription, and so do :data:`KEYWORD_RESOURCES` (with ``keyword_names``; they are added after
    everything else, so turning them off leaves the rest of the tenant as it was).
    ``omit_properties_share`` of the sites omit ``properties`` in list answers.
    ``spread_exponent`` shapes the spread: subscription *i* draws sites with weight ``1 / i**e``;
    :data:`HEAVY_TAILED` (1.3: at 100k sites in 1,000 subscriptions the largest holds about 37,000
    resources) or :data:`FLATTER` (0.95: about 15,000).
    """
    rng = random.Random(seed)
    tenant = Tenant(tenant_id or str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    tag = f"s{seed}"
    profile_cum = _cumulative([p[3] for p in PROFILES])
    kind_cum = _cumulative(list(_KIND_WEIGHTS))
    counter = [0]

    def new_sub(index: int, state: str) -> Subscription:
        sub_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = f"{rng.choice(('Contoso', 'Fabrikam', 'Northwind', 'Tailspin'))} {rng.choice(_ENVS)} {index:02d}"
        return tenant.add_subscription(sub_id, name, state)

    def settings_for(index: int, kind: str | None) -> dict[str, Any]:
        return {
            **profile_settings(rng, index, kind, profile_cum),
            "omit_properties": omit_properties_share > 0 and rng.random() < omit_properties_share,
        }

    def fill(sub: Subscription, n_sites: int, rg_names: list[str]) -> list[Site]:
        created: list[Site] = []
        for name in rg_names:
            sub._ensure_rg(name)
        weights = _cumulative([rng.paretovariate(1.3) for _ in rg_names])
        targets = rng.choices(rg_names, cum_weights=weights, k=n_sites) if rg_names else []
        # Guarantee the awkward groups are not empty (they exist to be listed).
        for i, name in enumerate(rg_names[: min(len(rg_names), n_sites)]):
            if name in AWKWARD_RESOURCE_GROUPS:
                targets[i] = name
        for rg in targets:
            i = counter[0]
            counter[0] += 1
            kind = KINDS[i] if i < len(KINDS) else rng.choices(KINDS, cum_weights=kind_cum)[0]
            created.append(sub._add_site(rg, f"{_prefix(kind)}-{tag}-{i:06d}", settings_for(i, kind)))
        return created

    def rg_names_for(sub_index: int, n_sites: int, awkward: bool) -> list[str]:
        n_rg = max(1, math.ceil(n_sites / max(1.0, sites_per_resource_group * rng.uniform(0.5, 1.5))))
        names = [f"rg-{rng.choice(_WORDS)}-{rng.choice(_ENVS)}-{sub_index:02d}-{k:03d}" for k in range(n_rg)]
        if awkward:
            names[: len(AWKWARD_RESOURCE_GROUPS)] = AWKWARD_RESOURCE_GROUPS
        return names

    # Functional subscriptions: heavy-tailed share of the sites.
    states = (
        ["Warned"] * warned_subscriptions
        + ["PastDue"] * past_due_subscriptions
        + ["Enabled"] * max(0, subscriptions - warned_subscriptions - past_due_subscriptions)
    )[:subscriptions]
    rng.shuffle(states)
    subs = [new_sub(i + 1, state) for i, state in enumerate(states)]
    all_sites: list[Site] = []
    if subs:
        weights = [1.0 / (i + 1) ** spread_exponent for i in range(len(subs))]
        alloc = [0] * len(subs)
        for idx in rng.choices(range(len(subs)), weights=weights, k=sites):
            alloc[idx] += 1
        for i, sub in enumerate(subs):
            awkward = awkward_names and i == 0 and alloc[i] > 0
            all_sites.extend(fill(sub, alloc[i], rg_names_for(i + 1, alloc[i], awkward)))
            for k in range(empty_resource_groups):
                sub._ensure_rg(f"rg-empty-{i + 1:02d}-{k}")

    # Inactive subscriptions come after the functional ones.
    inactive = ["Disabled"] * disabled_subscriptions + ["Deleted"] * deleted_subscriptions
    for j, state in enumerate(inactive):
        sub = new_sub(len(subs) + j + 1, state)
        n = sites_per_inactive_subscription
        all_sites.extend(fill(sub, n, rg_names_for(len(subs) + j + 1, n, False)))

    # Slots: spread over random sites; the first ones cycle the profiles too.
    n_slots = round(sites * slot_share) if all_sites else 0
    for k in range(n_slots):
        site = all_sites[rng.randrange(len(all_sites))]
        taken = site._slots or {}
        slot_name = next((s for s in _SLOT_NAMES if s not in taken), f"slot{len(taken)}")
        settings = settings_for(k, site.kind)
        settings["location"] = site.location
        settings["omit_properties"] = False
        site._new_slot(slot_name, settings)
    if keyword_names and subs:
        _add_keyword_resources(subs[0])
    tenant._touch()
    return tenant


def _add_keyword_resources(sub: Subscription) -> None:
    """:data:`KEYWORD_RESOURCES`, with fixed settings (no random draws: the rest of the tenant is as before).

    They cover PASS, WARN and FAIL, and are HTTPS-only so their verdicts hang on the certificate
    settings alone."""
    verdicts = (
        {"client_cert_enabled": True, "client_cert_mode": "Required"},
        {"client_cert_enabled": True, "client_cert_mode": "Optional"},
        {"client_cert_enabled": True, "client_cert_mode": "Required", "exclusion_paths": "/health"},
    )
    for i, (rg, app, slot) in enumerate(KEYWORD_RESOURCES):
        settings: dict[str, Any] = {"kind": "app", "https_only": True, **verdicts[i % len(verdicts)]}
        if slot is None:
            sub._add_site(rg, app, settings)
        else:
            site = sub.get_site(rg, app)
            assert site is not None, (rg, app)
            site._new_slot(slot, settings)


def _cumulative(weights: list[float] | list[int]) -> list[float]:
    total = 0.0
    out: list[float] = []
    for w in weights:
        total += w
        out.append(total)
    return out
