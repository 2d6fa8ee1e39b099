"""ARM's ``Microsoft.Web/sites`` routes: the subscription's and a group's site lists, a site, its
slots, one slot, each with ARM-style paging (``$skiptoken``, empty pages, a looping or foreign
``nextLink`` when a test asks for one), and a site as a real list page shows it (:func:`site_json`).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from .tenant import OMIT, Site
from .wire import _Response, arm_error, json_body

#: ``siteConfig`` as a real ``WebApps_List`` page carries it (ListWebAppsByResourceGroup.json, 2024-11-01).
_SITE_CONFIG: dict[str, Any] = {
    "numberOfWorkers": 1,
    "defaultDocuments": [
        "Default.htm",
        "Default.html",
        "Default.asp",
        "index.htm",
        "index.html",
        "iisstart.htm",
        "default.aspx",
        "index.php",
        "hostingstart.html",
    ],
    "netFrameworkVersion": "v4.0",
    "phpVersion": "5.6",
    "pythonVersion": "",
    "nodeVersion": "",
    "powerShellVersion": "",
    "linuxFxVersion": "",
    "requestTracingEnabled": False,
    "remoteDebuggingEnabled": False,
    "httpLoggingEnabled": False,
    "acrUseManagedIdentityCreds": False,
    "logsDirectorySizeLimit": 35,
    "detailedErrorLoggingEnabled": False,
    "use32BitWorkerProcess": True,
    "webSocketsEnabled": False,
    "alwaysOn": False,
    "appCommandLine": "",
    "managedPipelineMode": "Integrated",
    "virtualApplications": [{"virtualPath": "/", "physicalPath": "site\\wwwroot", "preloadEnabled": False}],
    "loadBalancing": "LeastRequests",
    "autoHealEnabled": False,
    "vnetName": "",
    "vnetRouteAllEnabled": False,
    "vnetPrivatePortsCount": 0,
    "http20Enabled": False,
    "minTlsVersion": "1.2",
    "scmMinTlsVersion": "1.2",
    "ftpsState": "AllAllowed",
    "functionAppScaleLimit": 0,
    "functionsRuntimeScaleMonitoringEnabled": False,
    "minimumElasticInstanceCount": 0,
    "azureStorageAccounts": {},
}


_OUTBOUND_VNET_ROUTING = {
    "allTraffic": False,
    "applicationTraffic": False,
    "backupRestoreTraffic": False,
    "contentShareTraffic": False,
    "imagePullTraffic": False,
    "managedIdentityTraffic": False,
}


#: The shapes :func:`site_json` serves: ``full`` (a real list page's) and ``compact`` (the minimum
#: the audit reads plus a few common properties; the shape the first benchmark figures used).
SITE_SHAPES = ("full", "compact")


def _custom_hosts(site: Site) -> list[str]:
    """Custom domains of a site: a quarter of the sites have one to three (fixed per name, so
    answers are stable and the tenant's random draws are unchanged)."""
    digest = zlib.crc32(site.name.encode())
    if digest % 4:
        return []
    zone = ("contoso.com", "fabrikam.net", "northwind.io")[digest % 3]
    label = site.name if site.slot_name is None else f"{site.name}-{site.slot_name}"
    return [f"{prefix}{label}.{zone}" for prefix in ("www.", "api.", "")[: 1 + (digest >> 8) % 3]]


def site_json(site: Site, kind: str, shape: str = "full") -> dict[str, Any]:
    """A site or slot as ``Microsoft.Web/sites`` (shape of ListWebApps.json / ListWebAppSlots.json).

    ``full`` carries every property a real ``WebApps_List`` page does (``siteConfig``, host-name
    lists and SSL states, outbound addresses, ...; about 3 KB a site, as the reference examples),
    so what the audit parses and holds per page is what it would in Azure. ``compact`` keeps
    fewer properties (about 1.7 KB).
    """
    if shape not in SITE_SHAPES:
        raise ValueError(f"unknown site shape {shape!r}: one of {SITE_SHAPES}")
    full_shape = shape == "full"
    sub_id = site.subscription.subscription_id
    rg = site.resource_group
    host_label = site.name if site.slot_name is None else f"{site.name}-{site.slot_name}"
    host = f"{host_label}.azurewebsites.net".lower()
    scm = f"{host_label}.scm.azurewebsites.net".lower()
    linux = bool(site.kind and "linux" in site.kind)
    doc: dict[str, Any] = {
        "id": site.served_id(kind),
        "name": site.full_name,
        "type": "Microsoft.Web/sites" if site.slot_name is None else "Microsoft.Web/sites/slots",
    }
    if site.kind is not None:
        doc["kind"] = site.kind
    doc["location"] = site.location
    if site.tags is not None:
        doc["tags"] = dict(site.tags)
    omit = site.omit_properties_on_get if kind == "site_get" else site.omit_properties
    if omit:
        return doc
    custom = _custom_hosts(site) if full_shape else []
    ssl_states = [{"name": host, "sslState": "Disabled", "hostType": "Standard"}]
    ssl_states += [
        {
            "name": name,
            "sslState": "SniEnabled",
            "thumbprint": hashlib.sha1(name.encode()).hexdigest().upper(),  # a certificate label, not a security use
            "hostType": "Standard",
        }
        for name in custom
    ]
    ssl_states.append({"name": scm, "sslState": "Disabled", "hostType": "Repository"})
    props: dict[str, Any] = {
        "name": site.full_name,
        "state": site.state,
        "hostNames": [host, *custom],
        "repositorySiteName": site.name,
        "usageState": "Normal",
        "enabled": True,
        "enabledHostNames": [host, *custom, scm],
        "availabilityState": "Normal",
        "hostNameSslStates": ssl_states,
        "serverFarmId": f"/subscriptions/{sub_id}/resourceGroups/{rg}/providers/Microsoft.Web/serverfarms/asp-{site.name}",
        "reserved": linux,
        "isXenon": False,
        "hyperV": False,
        "lastModifiedTimeUtc": "2025-06-01T12:00:00.000Z",
    }
    if full_shape:
        props.update(
            vnetRouteAllEnabled=False,
            vnetImagePullEnabled=False,
            vnetContentShareEnabled=False,
            outboundVnetRouting=dict(_OUTBOUND_VNET_ROUTING),
        )
        config = dict(_SITE_CONFIG)
        config["defaultDocuments"] = list(_SITE_CONFIG["defaultDocuments"])
        config["virtualApplications"] = [dict(v) for v in _SITE_CONFIG["virtualApplications"]]
        config.update(
            linuxFxVersion="PYTHON|3.11" if linux else "",
            ftpsState="FtpsOnly",
            http20Enabled=True,
            use32BitWorkerProcess=not linux,
        )
        props["siteConfig"] = config
    else:
        props["siteConfig"] = {
            "numberOfWorkers": 1,
            "linuxFxVersion": "PYTHON|3.11" if linux else "",
            "minTlsVersion": "1.2",
            "ftpsState": "FtpsOnly",
            "http20Enabled": True,
        }
    props.update(
        {
            "scmSiteAlsoStopped": False,
            "clientAffinityEnabled": True,
            **site.client_cert_properties(),
            "hostNamesDisabled": False,
        }
    )
    if full_shape:
        props["customDomainVerificationId"] = hashlib.sha256(sub_id.encode()).hexdigest().upper()
    props["outboundIpAddresses"] = "20.0.0.1,20.0.0.2"
    if full_shape:
        props["possibleOutboundIpAddresses"] = (
            "20.0.0.1,20.0.0.2,20.225.184.122,20.225.184.188,20.225.185.12,20.225.185.40"
        )
    props.update(
        {
            "containerSize": 0,
            "dailyMemoryTimeQuota": 0,
            "resourceGroup": rg,
            "defaultHostName": host,
            "httpsOnly": site.https_only,
            "redundancyMode": "None",
            "storageAccountRequired": False,
            "keyVaultReferenceIdentity": "SystemAssigned",
        }
    )
    if site.public_network_access is not None:
        props["publicNetworkAccess"] = site.public_network_access
    if kind == "site_get":
        props["sku"] = "Standard"
    override = site.raw_properties_override
    if override:
        for key, value in override.items():
            if value is OMIT:
                props.pop(key, None)
            else:
                props[key] = value
    doc["properties"] = props
    return doc


class WebService:
    """ARM's list and get routes of :class:`~tests.emulators.arm.ArmEmulator`."""

    def _route(self, kind: str, route: tuple[str, ...], raw_path: str, query: dict[str, str]) -> _Response:
        if kind == "subscriptions":
            subs = [s for s in self.tenant.subscriptions if self.list_deleted_subscriptions or s.state != "Deleted"]
            return self._page(kind, subs, self._subscription_json, raw_path, query)
        if not route:
            return _Response(404, arm_error("NotFound", "No HTTP resource was found that matches the request URI."))
        sub = self.tenant.get_subscription(route[1]) if len(route) > 1 else None
        if sub is None or sub.state == "Deleted":
            return _Response(
                404, arm_error("SubscriptionNotFound", f"The subscription '{route[1]}' could not be found.")
            )
        op = route[0]
        if op == "subscription":
            return _Response(200, json_body(self._subscription_json(sub)))
        if op == "sites_list":
            return self._page(kind, sub.sites, lambda s: self._site_json(s, kind), raw_path, query)
        rg_name = sub.resource_group_name(route[2])
        if op == "rg_list":
            rgs = sub.resource_groups
            return self._page(kind, rgs, lambda rg: self._rg_json(sub, rg), raw_path, query)
        if rg_name is None:
            return _Response(
                404, arm_error("ResourceGroupNotFound", f"Resource group '{route[2]}' could not be found.")
            )
        if op == "rg_get":
            return _Response(200, json_body(self._rg_json(sub, rg_name)))
        if op == "rg_sites_list":
            include_slots = query.get("includeslots", "").lower() == "true"
            items = sub.sites_in_group(rg_name, include_slots=include_slots) or []
            return self._page(kind, items, lambda s: self._site_json(s, kind), raw_path, query)
        site = sub.get_site(rg_name, route[3])
        if site is None:
            return self._not_found("Microsoft.Web/sites", route[3], rg_name)
        if op == "site_get":
            return _Response(200, json_body(self._site_json(site, kind)))
        if op == "slots_list":
            return self._page(kind, site.slots, lambda s: self._site_json(s, kind), raw_path, query)
        slot = site.get_slot(route[4])
        if slot is None:
            return self._not_found("Microsoft.Web/sites/slots", f"{site.name}/{route[4]}", rg_name)
        return _Response(200, json_body(self._site_json(slot, kind)))

    @staticmethod
    def _not_found(resource_type: str, name: str, rg: str) -> _Response:
        return _Response(
            404,
            arm_error(
                "ResourceNotFound",
                f"The Resource '{resource_type}/{name}' under resource group '{rg}' was not found. "
                "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            ),
        )

    def _page_size_for(self, kind: str) -> int:
        size = self.page_size
        if isinstance(size, Mapping):
            return max(1, int(size.get(kind, 50)))
        return max(1, int(size))

    def _page(
        self,
        kind: str,
        items: list[Any],
        render: Callable[[Any], dict[str, Any]],
        raw_path: str,
        query: dict[str, str],
    ) -> _Response:
        """One page of ``items``. ``$skiptoken`` is ``N`` (data from offset N) or ``Ne`` (an empty
        page before offset N); the token is opaque to a correct client."""
        size = self._page_size_for(kind)
        token = query.get("$skiptoken", "0")
        empty = token.endswith("e")
        try:
            offset = max(0, int(token[:-1] if empty else token))
        except ValueError:
            return _Response(400, arm_error("InvalidSkipToken", f"The skip token '{token}' is invalid."))
        paging_opts = kind in self.paging_kinds
        total = len(items)
        next_token: str | None
        if empty:
            page: list[Any] = []
            next_token = str(offset) if offset < total else None
        else:
            page = items[offset : offset + size]
            end = offset + len(page)
            next_token = str(end) if end < total else None
            if paging_opts and next_token is not None and self.empty_page_every:
                page_index = offset // size
                if (page_index + 1) % self.empty_page_every == 0:
                    next_token = f"{end}e"
            if paging_opts and next_token is None and self.trailing_empty_page:
                next_token = f"{end}e"
        if paging_opts and next_token is None and self.next_link_loop_to is not None:
            next_token = str(self.next_link_loop_to * size)
        doc: dict[str, Any] = {"value": [render(item) for item in page]}
        if next_token is not None:
            doc["nextLink"] = self._next_link(raw_path, query, next_token)
        return _Response(200, json_body(doc))

    def _next_link(self, raw_path: str, query: dict[str, str], token: str) -> str:
        params = [f"api-version={quote(query['api-version'], safe='')}"]
        for key, value in query.items():
            if key in ("api-version", "$skiptoken"):
                continue
            name = "includeSlots" if key == "includeslots" else key
            params.append(f"{quote(name, safe='$')}={quote(value, safe='')}")
        params.append(f"$skiptoken={quote(token, safe='')}")
        base = next((o for rx, o in self.foreign_next_links.items() if re.search(rx, raw_path)), self.url)
        return f"{base.rstrip('/')}{raw_path.rstrip('/')}?{'&'.join(params)}"

    def _site_json(self, site: Site, kind: str) -> dict[str, Any]:
        """A site or slot as ``Microsoft.Web/sites``, in the emulator's :attr:`site_shape`."""
        return site_json(site, kind, self.site_shape)
