"""Resource Graph: ``POST /providers/Microsoft.ResourceGraph/resources`` for exactly the product's
sites query (``shared.azure.resourcegraph.SITES_QUERY``) and its change query (``resourcechanges``), paged
with ``$skipToken``, with Resource Graph's own per-principal quota (15 queries per 5 s window; quota
headers on every answer).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .identity import _b64url, _b64url_decode
from .wire import _Handler, _Response, arm_error, json_body

#: Resource Graph api-versions with the request/response shape emulated here (2024-04-01 is the newest stable).
RESOURCE_GRAPH_API_VERSIONS: frozenset[str] = frozenset({"2021-03-01", "2022-10-01", "2024-04-01"})


RESOURCE_GRAPH_MAX_TOP = 1000


RESOURCE_GRAPH_DEFAULT_TOP = 100


@dataclass
class ResourceGraphQuota:
    """Resource Graph's own throttling: ``queries`` per ``window_seconds`` per principal (a fixed window
    that starts with the first query after the previous one ran out), reported on every answer as
    ``x-ms-user-quota-remaining`` and ``x-ms-user-quota-resets-after`` (``hh:mm:ss``)."""

    queries: int = 15
    window_seconds: float = 5.0
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refill(self) -> None:
        """Every principal's window fresh again."""
        with self._lock:
            self._windows.clear()

    def take(self, principal: str) -> tuple[bool, int, float]:
        """Consume one query: ``(allowed, remaining, seconds_until_reset)``."""
        now = time.monotonic()
        with self._lock:
            start, used = self._windows.get(principal, (now, 0))
            if now - start >= self.window_seconds:
                start, used = now, 0
            resets = max(0.0, start + self.window_seconds - now)
            if used >= self.queries:
                self._windows[principal] = (start, used)
                return False, 0, resets
            used += 1
            self._windows[principal] = (start, used)
            return True, self.queries - used, resets


def _hms(seconds: float) -> str:
    whole = max(0, math.ceil(seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _changes_since(query: str, template: str) -> datetime | None:
    """The ``since`` of a change query made from ``template`` (the product's text, verbatim but for
    the instant), or ``None`` when ``query`` is something else."""
    head, _, tail = template.partition("{since}")
    if not (query.startswith(head) and query.endswith(tail)):
        return None
    raw = query[len(head) : len(query) - len(tail)]
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class ResourceGraphService:
    """Resource Graph's routes of :class:`~tests.emulators.arm.ArmEmulator`."""

    def _resource_graph(self, h: _Handler, method: str, query: dict[str, str], body: bytes) -> _Response:
        """``POST /providers/Microsoft.ResourceGraph/resources``: the product's sites query only."""
        from shared.azure.changefeed import CHANGES_QUERY
        from shared.azure.resourcegraph import SITES_QUERY  # the queries the product sends

        def bad(code: str, message: str, status: int = 400) -> _Response:
            return _Response(status, arm_error(code, message))

        if method != "POST":
            return bad("MethodNotAllowed", f"The requested resource does not support http method '{method}'.", 405)
        version = query.get("api-version")
        if version is None:
            return bad(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in RESOURCE_GRAPH_API_VERSIONS:
            return bad(
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are "
                f"'{','.join(sorted(RESOURCE_GRAPH_API_VERSIONS))}'.",
            )
        quota_headers: dict[str, str] = {}
        if self.resource_graph_quota is not None:
            allowed, remaining, resets = self.resource_graph_quota.take(h.principal)
            quota_headers = {
                "x-ms-user-quota-remaining": str(remaining),
                "x-ms-user-quota-resets-after": _hms(resets),
            }
            if not allowed:
                with self._stats_lock:
                    self._resource_graph_throttled += 1
                return _Response(
                    429,
                    arm_error(
                        "RateLimiting",
                        "Please provide below info when asking for support: timestamp, correlationId. "
                        "Details: Too many requests. Please retry.",
                    ),
                    {"Retry-After": str(max(1, math.ceil(resets))), **quota_headers},
                )
        else:
            quota_headers = {"x-ms-user-quota-remaining": "15", "x-ms-user-quota-resets-after": "00:00:05"}
        try:
            request = json.loads(body or b"null")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return _Response(
                400, arm_error("BadRequest", "The request body is not a valid query request."), quota_headers
            )
        with self._stats_lock:
            self.resource_graph_queries.append(request)
        since = _changes_since(str(request.get("query") or ""), CHANGES_QUERY)
        if request.get("query") != SITES_QUERY and since is None:
            return _Response(
                400,
                arm_error(
                    "BadRequest",
                    "Please provide below info when asking for support: timestamp, correlationId. "
                    "Details: the emulator answers only shared.azure.resourcegraph.SITES_QUERY and "
                    "shared.azure.changefeed.CHANGES_QUERY, verbatim.",
                ),
                quota_headers,
            )
        options = request.get("options") or {}
        if not isinstance(options, dict):
            options = {}
        result_format = options.get("resultFormat", "objectArray")
        if result_format != "objectArray":
            return _Response(
                400, arm_error("BadRequest", f"resultFormat '{result_format}' is not emulated."), quota_headers
            )
        try:
            top = int(options.get("$top") or RESOURCE_GRAPH_DEFAULT_TOP)
            skip = int(options.get("$skip") or 0)
        except (TypeError, ValueError):
            return _Response(400, arm_error("BadRequest", "$top and $skip must be integers."), quota_headers)
        top = max(1, min(top, RESOURCE_GRAPH_MAX_TOP))
        token = options.get("$skipToken")
        offset = skip
        if token:
            try:
                offset = int(_b64url_decode(str(token)).decode())
            except (ValueError, UnicodeDecodeError):
                return _Response(
                    400, arm_error("InvalidSkipToken", f"The skip token '{token}' is invalid."), quota_headers
                )
        subscriptions = request.get("subscriptions")
        with self.tenant.lock:
            rows = self._resource_graph_rows() if since is None else self._change_rows(since)
        if self.resource_graph_hidden:  # Resource Graph answers an unreadable subscription with no rows
            rows = [r for r in rows if r["subscriptionId"].lower() not in self.resource_graph_hidden]
        hides = self.resource_graph_hides
        if hides is not None:
            rows = [r for r in rows if not hides(r)]
        if isinstance(subscriptions, list) and subscriptions:
            wanted = {str(s).lower() for s in subscriptions}
            rows = [r for r in rows if r["subscriptionId"].lower() in wanted]
        page = rows[offset : offset + top]
        end = offset + len(page)
        doc: dict[str, Any] = {
            "totalRecords": len(rows),
            "count": len(page),
            "data": page,
            "facets": [],
            "resultTruncated": "false",
        }
        if end < len(rows):
            doc["$skipToken"] = _b64url(str(end).encode())
        if self.resource_graph_answer is not None:
            doc = self.resource_graph_answer(doc, request)
        return _Response(200, json_body(doc), quota_headers)

    def _change_rows(self, since: datetime) -> list[dict[str, Any]]:
        """``resourcechanges`` rows after ``since``, projected as ``CHANGES_QUERY`` does and ordered by
        ``changeTime, targetResourceId``; a change becomes visible ``change_lag_seconds`` after it
        happened (Resource Graph is eventually consistent), measured on the tenant's change clock."""
        log = self.tenant.changes or []
        visible_until = self.tenant.change_clock() - timedelta(seconds=self.change_lag_seconds)
        rows = [
            {
                "changeTime": c.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "targetResourceId": c.target_id,
                "targetResourceType": c.target_type.lower(),
                "changeType": c.change_type,
                "subscriptionId": c.target_id.split("/")[2],
            }
            for c in log
            if c.timestamp > since and c.timestamp <= visible_until
        ]
        rows.sort(key=lambda r: (r["changeTime"], r["targetResourceId"]))
        return rows

    def freeze_resource_graph(self) -> None:
        """Resource Graph's ``resources`` index stops following the tenant (it lags): queries answer the
        sites and slots as they are now until :meth:`thaw_resource_graph`, whatever changes meanwhile."""
        with self.tenant.lock:
            self._rg_frozen = [dict(row) for row in self._resource_graph_rows()]

    def thaw_resource_graph(self) -> None:
        self._rg_frozen = None

    def _resource_graph_rows(self) -> list[dict[str, Any]]:
        """Every site and slot of every non-deleted subscription, projected as ``SITES_QUERY`` does and
        ordered by ``subscriptionId, id`` (cached until the tenant changes)."""
        if self._rg_frozen is not None:
            return self._rg_frozen
        cached = self._rg_rows
        if cached is not None and cached[0] == self.tenant.version:
            return cached[1]
        rows: list[dict[str, Any]] = []
        for sub in self.tenant.subscriptions:
            if sub.state == "Deleted":
                continue
            for site in sub.iter_resources():
                full = self._site_json(site, "site_get")
                props = full.get("properties") or {}
                rows.append(
                    {
                        "id": site.served_id("resourcegraph"),
                        "name": site.full_name,
                        # Resource Graph lower-cases type and resourceGroup and normalises location.
                        "type": full["type"].lower(),
                        "kind": site.kind or "",
                        "location": site.location.replace(" ", "").lower(),
                        "subscriptionId": sub.subscription_id,
                        "resourceGroup": site.resource_group.lower(),
                        "tags": dict(site.tags or {}),
                        "properties": {
                            key: props.get(key)
                            for key in (
                                "state",
                                "clientCertEnabled",
                                "clientCertMode",
                                "clientCertExclusionPaths",
                                "httpsOnly",
                                "publicNetworkAccess",
                            )
                        },
                    }
                )
        rows.sort(key=lambda r: (r["subscriptionId"].lower(), r["id"].lower()))
        self._rg_rows = (self.tenant.version, rows)
        return rows
