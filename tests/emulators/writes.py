"""The writes the Azure CLI sends to fix a site or slot, taught to an :class:`~tests.emulators.arm.ArmEmulator`.

The audit only reads: the emulator answers every write with 405 unless a test installs
:class:`SiteWrites`, as the real-CLI test of the fix script does (``tests/integration/test_fix_script_azcli.py``).
Then it answers the two write shapes ``az`` uses on ``Microsoft.Web/sites`` and ``.../slots``:

* ``PUT`` (``az webapp update`` / ``az functionapp update``: the generic update GETs the resource into
  the SDK's ``Site`` model, applies ``--set`` and PUTs the whole model back; ``az resource update``
  does the same with the raw JSON). For an existing site App Service treats a property missing from
  the body as unchanged, so only the properties sent count;
* ``PATCH`` (``az resource patch``, Web Apps - Update): only the properties sent.

Only the four properties a fix may change are applied to the tenant (``clientCertEnabled``,
``clientCertMode``, ``clientCertExclusionPaths``, ``httpsOnly``). Every write is logged as a
:class:`Write` with *what else* it tried to change: any other property (or ``kind``, ``location``,
``tags``) whose value differs from what a ``GET`` of that resource served. A test asserts that each
write hit exactly the resource its command named and changed nothing else.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from .arm import ArmEmulator, _Response, arm_error, site_json
from .tenant import Site

__all__ = ["FIX_PROPERTIES", "SiteWrites", "Write"]

#: The ``properties`` a client-certificate fix may change, and the tenant field each one sets.
FIX_PROPERTIES: dict[str, str] = {
    "clientCertEnabled": "client_cert_enabled",
    "clientCertMode": "client_cert_mode",
    "clientCertExclusionPaths": "exclusion_paths",
    "httpsOnly": "https_only",
}
_TYPES: dict[str, tuple[type, ...]] = {
    "clientCertEnabled": (bool,),
    "clientCertMode": (str,),
    "clientCertExclusionPaths": (str, type(None)),
    "httpsOnly": (bool,),
}
#: Top-level members of a PUT body compared with the served resource (the rest is read-only).
_TOP_LEVEL = ("kind", "location", "tags")


@dataclass(frozen=True)
class Write:
    """One write the emulator accepted: the resource it hit (canonical id), the fix properties it set,
    and ``others``: every other member whose value differs from the served one, as ``{name: (served, sent)}``."""

    method: str
    resource_id: str
    applied: dict[str, Any]
    others: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: Served ``properties`` a PUT did not carry (App Service keeps them; a test checks they are read-only).
    omitted: tuple[str, ...] = ()


class SiteWrites:
    """Install with ``SiteWrites(arm)``; :attr:`writes` lists what was written, in order."""

    def __init__(self, emulator: ArmEmulator) -> None:
        self.emulator = emulator
        self.writes: list[Write] = []
        self._lock = threading.Lock()
        emulator.write_handler = self.handle

    def handle(self, method: str, kind: str, route: tuple[str, ...], body: bytes) -> _Response | None:
        """The answer to a write on a site or slot; ``None`` (405) for anything else."""
        if method not in ("PUT", "PATCH") or kind != "site_get":
            return None
        tenant = self.emulator.tenant
        with tenant.lock:
            site = self._resource(route)
            if site is None:
                return _Response(404, arm_error("ResourceNotFound", f"No resource at {'/'.join(route[1:])}."))
            try:
                document = json.loads(body or b"null")
            except ValueError:
                document = None
            if not isinstance(document, dict) or not isinstance(document.get("properties", {}), dict):
                return _Response(400, arm_error("InvalidRequestContent", "The request content was invalid."))
            served = site_json(site, "site_get", self.emulator.site_shape)
            applied, others, error = _compare(served, document, full=method == "PUT")
            if error:
                return _Response(400, arm_error("InvalidRequestContent", error))
            if applied:
                site.update(**{FIX_PROPERTIES[name]: value for name, value in applied.items()})
            sent = document.get("properties") or {}
            omitted = tuple(sorted(set(served.get("properties") or {}) - set(sent))) if method == "PUT" else ()
            with self._lock:
                self.writes.append(Write(method, site.id, applied, others, omitted))
            answer = site_json(site, "site_get", self.emulator.site_shape)
        return _Response(200, json.dumps(answer, ensure_ascii=False).encode())

    def _resource(self, route: tuple[str, ...]) -> Site | None:
        sub = self.emulator.tenant.get_subscription(route[1])
        rg = sub.resource_group_name(route[2]) if sub is not None else None
        site = sub.get_site(rg, route[3]) if sub is not None and rg is not None else None
        if site is None or route[0] == "site_get":
            return site
        return site.get_slot(route[4])


def _compare(
    served: dict[str, Any], document: dict[str, Any], *, full: bool
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]], str]:
    """``(fix properties to apply, other members that differ, error)`` of a write body."""
    served_props: dict[str, Any] = served.get("properties") or {}
    applied: dict[str, Any] = {}
    others: dict[str, tuple[Any, Any]] = {}
    for name, value in (document.get("properties") or {}).items():
        if name in FIX_PROPERTIES:
            if not isinstance(value, _TYPES[name]):
                return {}, {}, f"The value of '{name}' is not valid: {value!r}."
            if value != served_props.get(name):
                applied[name] = value
        elif value != served_props.get(name):
            others[f"properties.{name}"] = (served_props.get(name), value)
    if full:  # a PUT carries the top-level members too; a PATCH changes only what it names
        for name in _TOP_LEVEL:
            if name in document and document[name] != served.get(name) and not (name == "tags" and not document[name]):
                others[name] = (served.get(name), document[name])
    else:
        for name in set(document) - {"properties"}:
            if document[name] is not None and document[name] != served.get(name):
                others[name] = (served.get(name), document[name])
    return applied, others, ""
