"""ARM's tenant and subscription scope: ``GET /subscriptions``, a subscription, its resource groups,
and ARM's read throttling (a token bucket per subscription and principal).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .tenant import Subscription
from .wire import _Handler, _Response, arm_error

_DEFAULT_REMAINING_READS = 11999


@dataclass
class ThrottleModel:
    """ARM's read throttling, approximated as a token bucket per subscription and principal (and one per
    tenant and principal for ``/subscriptions``): ``capacity`` reads, refilled at ``refill_per_second``."""

    capacity: float = 250.0
    refill_per_second: float = 25.0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refill(self) -> None:
        """Every bucket full again, as after a quiet day (a benchmark's next night)."""
        with self._lock:
            self._buckets.clear()

    def take(self, key: str) -> tuple[bool, int, int]:
        """Consume one read: ``(allowed, remaining, retry_after_seconds)``."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens >= 1.0:
                tokens -= 1.0
                self._buckets[key] = (tokens, now)
                return True, int(tokens), 0
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.refill_per_second
            return False, 0, max(1, math.ceil(wait))


class SubscriptionsService:
    """The subscription-scope JSON and the read budget of :class:`~tests.emulators.arm.ArmEmulator`."""

    def _read_budget(self, h: _Handler, kind: str, route: tuple[str, ...]) -> _Response | dict[str, str]:
        """ARM's read budget for this request: a 429 when it is spent, else the headers saying what is left."""
        limit_headers: dict[str, str] = {}
        if kind == "other" and not route:
            return limit_headers
        scope = route[1] if len(route) > 1 else "tenant"
        header = (
            "x-ms-ratelimit-remaining-tenant-reads"
            if scope == "tenant"
            else "x-ms-ratelimit-remaining-subscription-reads"
        )
        if self.throttle is not None:
            allowed, remaining, retry_after = self.throttle.take(f"{scope.lower()}|{h.principal}")
            if not allowed:
                with self._stats_lock:
                    self._throttled_by_model += 1
                target = "tenant" if scope == "tenant" else f"subscription '{scope}'"
                return _Response(
                    429,
                    arm_error(
                        "SubscriptionRequestsThrottled" if scope != "tenant" else "TenantRequestsThrottled",
                        f"Number of 'read' requests for {target} exceeded. Please try again after "
                        f"'{retry_after}' seconds after additional tokens are available. Refer to "
                        "https://aka.ms/arm-throttling for additional information.",
                    ),
                    {"Retry-After": str(retry_after), header: "0"},
                )
            limit_headers[header] = str(remaining)
        else:
            limit_headers[header] = str(_DEFAULT_REMAINING_READS)
        return limit_headers

    def _subscription_json(self, sub: Subscription) -> dict[str, Any]:
        return {
            "id": f"/subscriptions/{sub.subscription_id}",
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionId": sub.subscription_id,
            "tenantId": self.tenant.tenant_id,
            "displayName": sub.display_name,
            "state": sub.state,
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off",
            },
            "tags": {},
        }

    @staticmethod
    def _rg_json(sub: Subscription, rg: str) -> dict[str, Any]:
        return {
            "id": f"/subscriptions/{sub.subscription_id}/resourceGroups/{rg}",
            "name": rg,
            "type": "Microsoft.Resources/resourceGroups",
            "location": "eastus",
            "properties": {"provisioningState": "Succeeded"},
        }
