"""The peer-style baseline: what a typical scanner does, on the same emulated tenant.

Mirrors Prowler's App Service collection: subscriptions one after another; in each, the SDK's
``web_apps.list()`` (full model deserialization) and then one more ARM call per app
(``web_apps.get``), all sequential; findings kept in memory until the end. It audits production
sites only (no slots), which flatters it. Being sequential, its time is linear in its requests,
so it is timed on a sample of subscriptions and scaled by the request count of the whole tenant.
"""

from __future__ import annotations

import math
import time
from typing import Any

from azure.identity import ManagedIdentityCredential
from azure.mgmt.web import WebSiteManagementClient

from tests.emulators.tenant import ACTIVE_STATES, Subscription, Tenant


def baseline_requests(sub: Subscription, page_size: int) -> int:
    sites = len(sub.sites)
    return max(1, math.ceil(sites / page_size)) + sites


def choose_sample(tenant: Tenant, page_size: int, budget: int) -> list[Subscription]:
    """Subscriptions spread over the size range whose baseline requests fit in ``budget``."""
    active = sorted((s for s in tenant.subscriptions if s.state in ACTIVE_STATES), key=lambda s: len(s.sites))
    chosen: list[Subscription] = []
    spent = 0
    step = max(1, len(active) // 40)
    for sub in active[::step]:
        cost = baseline_requests(sub, page_size)
        if spent + cost > budget:
            continue
        chosen.append(sub)
        spent += cost
    return chosen


def run_baseline(
    tenant: Tenant, arm_url: str, page_size: int, budget: int, sites_total: int, resources_total: int
) -> dict[str, Any]:
    sample = choose_sample(tenant, page_size, budget)
    credential = ManagedIdentityCredential()
    findings: list[dict[str, Any]] = []
    requests = 0
    started = time.monotonic()
    for sub in sample:
        with WebSiteManagementClient(
            credential, sub.subscription_id, base_url=arm_url, credential_scopes=[f"{arm_url}/.default"]
        ) as client:
            apps = list(client.web_apps.list())
            requests += max(1, math.ceil(len(apps) / page_size))
            for app in apps:
                rg = app.resource_group or ""
                detail = client.web_apps.get(rg, app.name or "")  # the extra call per app
                requests += 1
                findings.append(
                    {
                        "id": detail.id,
                        "clientCertEnabled": detail.client_cert_enabled,
                        "clientCertMode": str(getattr(detail.client_cert_mode, "value", detail.client_cert_mode)),
                    }
                )
    wall = time.monotonic() - started
    active = [s for s in tenant.subscriptions if s.state in ACTIVE_STATES]
    total_requests = math.ceil(len(tenant.subscriptions) / page_size) + sum(
        baseline_requests(s, page_size) for s in active
    )
    per_request = wall / requests if requests else 0.0
    return {
        "strategy": "sequential per subscription; web_apps.list() + web_apps.get() per app (Prowler-style)",
        "sample_subscriptions": len(sample),
        "sample_sites": len(findings),
        "sample_requests": requests,
        "sample_wall_seconds": round(wall, 3),
        "seconds_per_request": round(per_request, 5),
        "tenant_requests": total_requests,
        "estimated_wall_seconds": round(per_request * total_requests, 1),
        "audits": f"{sites_total} sites (no slots) of {resources_total} resources",
    }
