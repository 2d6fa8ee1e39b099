"""The demo's tenant: a small, realistic estate that shows everything docs/security-team.md teaches.

Hand-written rather than generated, so that the names a newcomer reads are the ones the docs use
(``Prod``, ``rg-web``, ``shop``, ``alice@contoso.com``, the ``payments`` team, ``rg(legacy)``) and every
command of the security team's page has something to show:

* owners and teams on most apps (tags ``owner``/``team``, in several casings), one app nobody owns,
  and a deployment slot without tags that takes its site's owner;
* every verdict: PASS, WARN (exclusion paths), FAIL for each reason (*Allow*, *Allow for interactive
  users*, *Ignore*, ``/`` excluded, plain HTTP left open), EXEMPT once the team exempts one, and an
  ERROR row for a subscription the auditor may not read;
* an exemption *request* from the ``clientcert-exemption`` tag (``AUDIT_EXEMPTION_REQUEST_TAG``);
* a **next night that differs** (:func:`apply_night`): apps break, one is fixed, one is deleted, one
  appears, and the ``Legacy`` subscription vanishes (``subscriptions retire`` closes that gap);
* a **change** (:data:`CHANGES`) that the change poll picks up within minutes (``./demo change``).

Nothing here parses anything: :mod:`tests.demo` builds the tenant from these tables for each
command, replaying the nights and changes recorded in ``.demo/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from tests.emulators.tenant import Site, Subscription, Tenant

__all__ = [
    "CHANGES",
    "EXEMPTION_REQUEST_TAG",
    "LEGACY",
    "PROD",
    "SANDBOX",
    "SUBSCRIPTIONS",
    "TENANT_ID",
    "apply_change",
    "apply_night",
    "build_tenant",
]

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
#: The subscriptions, by the names the docs use. ``Prod``'s id starts ``d7a7a3cc``, as in the report's
#: example line ``Prod (d7a7a3cc)``.
PROD = "d7a7a3cc-5b2e-4f1a-9c3d-8e4f5a6b7c8d"
DEV = "3c1f9e2a-7d4b-4c8e-a1f6-2b9d0e7c5a31"
SHARED = "8b6e4d2c-1a3f-4e5b-9d7c-6f0a2b4c8e19"
LEGACY = "5e0d7c9b-3a2f-4b1e-8c6d-9a7f1e3b5d27"
SANDBOX = "99999999-9999-4999-8999-999999999999"

SUBSCRIPTIONS: dict[str, str] = {
    PROD: "Prod",
    DEV: "Dev",
    SHARED: "Shared services",
    LEGACY: "Legacy",
    SANDBOX: "Sandbox",
}
#: The tag app owners set to ask for an exemption (the demo sets ``AUDIT_EXEMPTION_REQUEST_TAG`` to it).
EXEMPTION_REQUEST_TAG = "clientcert-exemption"

REQUIRED: dict[str, Any] = {"client_cert_enabled": True, "client_cert_mode": "Required"}
ALLOW: dict[str, Any] = {"client_cert_enabled": True, "client_cert_mode": "Optional"}
INTERACTIVE: dict[str, Any] = {"client_cert_enabled": True, "client_cert_mode": "OptionalInteractiveUser"}
IGNORE: dict[str, Any] = {"client_cert_enabled": False, "client_cert_mode": "Required"}  # Azure's default


class App(NamedTuple):
    """One production site of the demo: where it lives, what it is, who owns it, how it is set."""

    subscription: str
    resource_group: str
    name: str
    kind: str
    tags: Mapping[str, str] | None
    settings: Mapping[str, Any]
    slots: tuple[tuple[str, Mapping[str, str] | None, Mapping[str, Any]], ...] = ()


#: The first night's estate. ``tags=None``: the resource has no tags at all.
APPS: tuple[App, ...] = (
    # Prod: the shop, the payments team, and a legacy intranet.
    App(
        PROD,
        "rg-web",
        "shop",
        "app",
        {"owner": "alice@contoso.com", "cost-center": "4711"},
        ALLOW,
        # A slot without tags: its Owner is its site's (alice).
        (("staging", None, IGNORE),),
    ),
    App(PROD, "rg-web", "shop-api", "api", {"team": "payments"}, REQUIRED),
    App(PROD, "rg-web", "blog", "app,linux", {"Owner": "bob@contoso.com"}, {**REQUIRED, "exclusion_paths": "/health"}),
    App(PROD, "rg-payments", "payments-api", "app,linux", {"team": "payments"}, IGNORE),
    App(PROD, "rg-payments", "payments-worker", "functionapp,linux", {"team": "payments"}, REQUIRED),
    App(
        PROD,
        "rg-payments",
        "checkout",
        "app",
        {"team": "payments", EXEMPTION_REQUEST_TAG: "Partner callbacks cannot present certificates yet. SEC-2041"},
        INTERACTIVE,
        (("canary", {"team": "payments"}, REQUIRED),),
    ),
    App(PROD, "rg(legacy)", "intranet", "app", {"OWNER": "carol@contoso.com"}, {**REQUIRED, "https_only": False}),
    App(PROD, "rg-integration", "orders-workflow", "functionapp,workflowapp", {"team": "integration"}, REQUIRED),
    App(PROD, "rg-integration", "tmp-export", "app", None, ALLOW),  # nobody owns it
    # Dev: the same teams' development copies.
    App(DEV, "rg-dev-web", "shop-dev", "app", {"owner": "alice@contoso.com"}, IGNORE),
    App(DEV, "rg-dev-web", "portal-dev", "app,linux", {"team": "web"}, REQUIRED),
    App(DEV, "rg-dev-web", "func-dev", "functionapp", {"team": "web"}, {**REQUIRED, "exclusion_paths": "/api; /"}),
    App(DEV, "rg-containers", "catalog", "app,linux,container", {"team": "web"}, REQUIRED),
    # Shared services: the platform team's.
    App(SHARED, "rg-monitoring", "grafana", "app,linux", {"team": "platform"}, REQUIRED),
    App(
        SHARED,
        "rg-monitoring",
        "status-page",
        "app",
        {"team": "platform"},
        {**REQUIRED, "exclusion_paths": "/status,/health"},
    ),
    # Legacy: to be cancelled; it vanishes on the second night.
    App(LEGACY, "rg-old", "old-portal", "app", {"contact": "dave@contoso.com"}, IGNORE),
    App(LEGACY, "rg-old", "old-api", "api", {"contact": "dave@contoso.com"}, REQUIRED),
    # Sandbox: the auditor holds no role there (an ERROR row every night).
    App(SANDBOX, "rg-sandbox", "experiment", "app", {"owner": "erin@contoso.com"}, ALLOW),
)


def build_tenant() -> Tenant:
    """The first night's tenant."""
    tenant = Tenant(TENANT_ID)
    subs = {sub_id: tenant.add_subscription(sub_id, name) for sub_id, name in SUBSCRIPTIONS.items()}
    for app in APPS:
        site = _add(subs[app.subscription], app)
        for slot_name, tags, settings in app.slots:
            site._new_slot(slot_name, {"kind": app.kind, "location": site.location, "tags": tags, **settings})
    tenant._touch()
    return tenant


def _add(sub: Subscription, app: App) -> Site:
    return sub._add_site(
        app.resource_group,
        app.name,
        {"kind": app.kind, "location": "West Europe", "tags": app.tags, "https_only": True, **app.settings},
    )


def _site(tenant: Tenant, subscription: str, resource_group: str, name: str) -> Site:
    sub = tenant.get_subscription(subscription)
    site = sub.get_site(resource_group, name) if sub else None
    if site is None:
        raise KeyError(f"{resource_group}/{name}")
    return site


def apply_night(tenant: Tenant, night: int) -> list[str]:
    """Make the tenant what it is on ``night`` (1 is :func:`build_tenant` as it is; every later night
    is the second one). Returns what changed, in words, for the demo to say."""
    if night < 2:
        return []
    _site(tenant, PROD, "rg-web", "shop-api").update(**IGNORE)
    _site(tenant, DEV, "rg-dev-web", "portal-dev").update(**ALLOW)
    _site(tenant, SHARED, "rg-monitoring", "grafana").add_slot("preview", tags={"team": "platform"}, **INTERACTIVE)
    _site(tenant, PROD, "rg(legacy)", "intranet").update(https_only=True)
    prod = tenant.get_subscription(PROD)
    assert prod is not None
    prod.remove_site("rg-integration", "tmp-export")
    prod.add_site("rg-web", "landing", kind="app", tags={"owner": "alice@contoso.com"}, **ALLOW)
    tenant.remove_subscription(LEGACY)
    return [
        "shop-api (payments) turned certificates off; portal-dev (web) set them to Allow",
        "grafana got a new slot 'preview' with Allow for interactive users",
        "intranet (rg(legacy)) closed plain HTTP: it passes now",
        "tmp-export was deleted; landing (alice) was created with Allow",
        "the Legacy subscription vanished (cancelled): its resources stay in the state, reported until retired",
    ]


class Change(NamedTuple):
    """A change an app owner makes between two nights, for the change poll to catch."""

    name: str
    description: str
    subscription: str
    resource_group: str
    site: str
    settings: Mapping[str, Any]


#: ``./demo change NAME``: each one a setting an owner really changes; the first is the default.
CHANGES: dict[str, Change] = {
    c.name: c
    for c in (
        Change("blog-allow", "bob sets blog's client certificates to Allow", PROD, "rg-web", "blog", ALLOW),
        Change("blog-require", "bob requires client certificates on blog again", PROD, "rg-web", "blog", REQUIRED),
        Change("shop-require", "alice requires client certificates on shop", PROD, "rg-web", "shop", REQUIRED),
        Change(
            "catalog-off", "the web team turns certificates off on catalog", DEV, "rg-containers", "catalog", IGNORE
        ),
    )
}


def apply_change(tenant: Tenant, name: str) -> str:
    """Apply one of :data:`CHANGES` (if its app still exists); returns its description."""
    change = CHANGES[name]
    sub = tenant.get_subscription(change.subscription)
    site = sub.get_site(change.resource_group, change.site) if sub else None
    if site is not None:
        site.update(**change.settings)
    return change.description
