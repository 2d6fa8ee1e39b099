"""The audit identity's access to the tenant, as ARM and Resource Graph show it.

ARM lists only the subscriptions in which the caller holds a role: an identity with no role at
all (every new deployment, before the tenant admin grants the custom role; or after it is removed)
gets an empty subscription list, a 403 under every subscription, and no rows from Resource Graph
(which answers silence, not an error). :func:`revoke_access` makes the emulator answer so;
:func:`restore_access` undoes it.
"""

from __future__ import annotations

from .arm import ArmEmulator
from .faults import FaultRule, Status

__all__ = ["restore_access", "revoke_access"]

EMPTY_LIST = b'{"value": []}'


def revoke_access(arm: ArmEmulator) -> list[FaultRule]:
    """No role anywhere: the subscription list is empty, every subscription answers 403
    ``AuthorizationFailed``, and Resource Graph returns no rows. Returns the rules it added."""
    rules = [arm.faults.add(FaultRule(Status(200, body=EMPTY_LIST), path=r"^/subscriptions$"))]
    for sub in arm.tenant.subscriptions:
        rules.append(arm.faults.forbid_subscription(sub.subscription_id))
        arm.resource_graph_hidden.add(sub.subscription_id.lower())
    return rules


def restore_access(arm: ArmEmulator, rules: list[FaultRule]) -> None:
    """The role is granted (again): every subscription readable as before."""
    for rule in rules:
        arm.faults.remove(rule)
    arm.resource_graph_hidden.clear()
