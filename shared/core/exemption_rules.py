"""The exemption rules, pure: what an exemption is, what it covers and when, how one is validated
and read back from its row, and the request a tag may make (a tag never exempts).

The table that holds them is ``exemptions.py``'s. Every rule that keeps exemptions from becoming a
silent backdoor is enforced twice: when one is added, and again when the audit loads the table, so
a row written by hand in Storage Explorer gets no more power than one added with
``clientcert-audit exempt add``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ExemptionError, one_line
from .ids import SUBSCRIPTION_ID_PATTERN
from .models import Finding, Status, valid_text
from .names import fold, starts_with
from .when import as_utc, parse_when

log = logging.getLogger(__name__)

MAX_EXEMPTION_DAYS = 365
EXPIRING_SOON_DAYS = 14

_RG = r"[\w\-.()]{0,89}[\w\-()]"  # ARM: 1-90 chars, unicode letters/digits, _-.(), not ending in '.'
_SITE = r"[a-z0-9][a-z0-9-]{0,59}"
_SCOPE = re.compile(
    rf"^/subscriptions/{SUBSCRIPTION_ID_PATTERN}"
    rf"(/resourcegroups/{_RG}"
    rf"(/providers/microsoft\.web/sites/{_SITE}"
    rf"(/slots/{_SITE})?)?)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Exemption:
    """An accepted exception for a resource id, or every resource under a scope prefix."""

    scope: str
    reason: str
    approver: str
    created: datetime
    expires: datetime
    exemption_id: str = ""
    recorded_by: str = ""

    def covers(self, resource_id: str) -> bool:
        """Prefix match on a path boundary (``/sites/app`` never covers ``/sites/app2``), names compared
        as ARM compares them (:mod:`shared.core.names`: a group spelled with U+212A is not ``...k...``)."""
        scope = self.scope.rstrip("/")
        rid = resource_id.rstrip("/")
        return fold(rid) == fold(scope) or starts_with(rid, scope + "/")

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
                    f"Exempt until {_when(exemption.expires)} ({exemption.reason}; approved by "
                    f"{exemption.approver}). Without the exemption: {finding.status.value}: {finding.reason}"
                ),
                exemption=exemption.exemption_id or exemption.scope,
            )
    return finding


def _when(moment: datetime) -> str:
    """``2026-09-30`` for a midnight (UTC) expiry, else ``2026-09-30 18:00 UTC``."""
    utc = moment.astimezone(UTC)
    return utc.date().isoformat() if (utc.hour, utc.minute) == (0, 0) else f"{utc:%Y-%m-%d %H:%M} UTC"


def exemption_request(finding: Finding, tag_name: str | None) -> str:
    """The value of the exemption-request tag on a failing or warning resource, else ``""``.

    A request is only ever *listed* for the security team to approve; it never changes the
    status. Tag names are case-insensitive in Azure, so the lookup is too.
    """
    if not tag_name or finding.status not in (Status.FAIL, Status.WARN):
        return ""
    wanted = fold(tag_name)
    for key, value in finding.tags:
        if fold(key) == wanted:
            return value.strip() or "(requested, no reason given)"
    return ""


# -- validation (pure) ----------------------------------------------------------------------------
def validate_scope(scope: str) -> str:
    """Return the scope, trimmed, if it is a subscription, resource group, site or slot id.

    Anything broader or looser (an empty string, ``/subscriptions``, a provider-less path) is
    refused: a prefix like that would exempt far more than anyone approved.
    """
    value = scope.strip().rstrip("/")
    if not _SCOPE.match(value):
        raise ExemptionError(
            f"scope {scope!r} is not a subscription, resource group, site or slot id; expected "
            "/subscriptions/<guid>[/resourceGroups/<rg>[/providers/Microsoft.Web/sites/<app>[/slots/<slot>]]]"
        )
    return value


def parse_expiry(text: str, now: datetime) -> datetime:
    """Read ``--expires``: ``YYYY-MM-DD`` (00:00 UTC that day), an ISO date-time, or ``30d``/``12h``/``2w``/``90m``."""
    try:
        return parse_when(text, now, direction=1)
    except ValueError:
        raise ExemptionError(
            f"expiry {text!r} is not a date (2025-06-30), a date-time (2025-06-30T18:00Z) or a duration (30d, 12h)"
        ) from None


def new_exemption(
    scope: str,
    reason: str,
    approver: str,
    expires: datetime,
    now: datetime,
    *,
    recorded_by: str = "",
    max_days: int = MAX_EXEMPTION_DAYS,
) -> Exemption:
    """Build a valid exemption or raise :class:`ExemptionError` naming the broken rule.

    Expiry is mandatory, in the future, and at most ``max_days`` away: there are no permanent
    exemptions, only ones that someone must consciously renew.
    """
    if not reason.strip():
        raise ExemptionError("a reason is required (why is this resource allowed to skip client certificates?)")
    if not approver.strip():
        raise ExemptionError("an approver is required (who on the security team accepted the risk?)")
    if expires <= now:
        raise ExemptionError(f"expiry {expires.isoformat()} is not in the future")
    if expires - now > timedelta(days=max_days):
        raise ExemptionError(
            f"expiry {expires.date().isoformat()} is more than {max_days} days away; exemptions must be renewed"
        )
    return Exemption(
        scope=validate_scope(scope),
        reason=reason.strip(),
        approver=approver.strip(),
        created=now,
        expires=expires,
        recorded_by=recorded_by,
    )


def expiring_soon(exemptions: Iterable[Exemption], now: datetime, within: timedelta) -> list[Exemption]:
    """Active exemptions that end within ``within``, soonest first: the report's renewal list."""
    return sorted(
        (e for e in exemptions if e.active(now) and e.expires <= now + within),
        key=lambda e: e.expires,
    )


# -- entity mapping (pure) ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BrokenExemption:
    """A row of the exemptions table that exempts nothing: a value that is not what it must be (a
    date no one can compare, a number where text belongs, a missing field) or a broken rule. It is
    an error for that exemption only: the resource it names is audited as if it were not there,
    every run and poll logs it, and ``exempt list`` and the report list it until it is fixed or
    removed (``exempt remove <scope>``)."""

    row: str  # PartitionKey/RowKey, where to find it in the table
    scope: str  # the Scope as written (valid text, at most SHOWN_CHARS), or the RowKey without one
    problem: str


#: At most this much of a hand-written value is quoted in a problem or shown as a broken row's scope.
SHOWN_CHARS = 200


def read_exemption(entity: Mapping[str, Any], *, max_days: int = MAX_EXEMPTION_DAYS) -> Exemption | BrokenExemption:
    """Read a row back as an exemption, or as a :class:`BrokenExemption` that says what is wrong.

    Rows can be written by hand (Storage Explorer, a script), so the same rules as ``exempt add``
    apply here, and any value is expected: a ``CreatedAt`` of ``0001-01-01T00:00:00+01:00`` (which no
    UTC arithmetic can hold), a number for a reason, a field left out. None of them may stop a run.
    An expiry more than ``max_days`` after creation is cut to ``max_days`` rather than honoured.
    """
    row = f"{entity.get('PartitionKey')}/{entity.get('RowKey')}"
    written = entity.get("Scope") if isinstance(entity.get("Scope"), str) else entity.get("RowKey")
    shown_scope = valid_text(str(written or ""))[:SHOWN_CHARS]
    try:
        scope = validate_scope(_text_field(entity, "Scope"))
        reason, approver = _text_field(entity, "Reason"), _text_field(entity, "Approver")
        created, expires = _time_field(entity, "CreatedAt"), _time_field(entity, "ExpiresAt")
        if expires - created > timedelta(days=max_days):
            log.warning("Exemption %s runs longer than %d days; honouring only the first %d", row, max_days, max_days)
            expires = created + timedelta(days=max_days)
    except ExemptionError as exc:
        return BrokenExemption(row, shown_scope, str(exc))
    except (ArithmeticError, ValueError, TypeError) as exc:  # whatever else a hand-written value can do
        return BrokenExemption(row, shown_scope, f"cannot be read: {valid_text(one_line(exc, SHOWN_CHARS))}")
    recorded_by = entity.get("RecordedBy")
    return Exemption(
        scope=scope,
        reason=reason,
        approver=approver,
        created=created,
        expires=expires,
        exemption_id=scope,
        recorded_by=recorded_by if isinstance(recorded_by, str) else "",
    )


def _shown(value: object) -> str:
    return valid_text(repr(value))[:SHOWN_CHARS]


def _text_field(entity: Mapping[str, Any], name: str) -> str:
    value = entity.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ExemptionError(f"{name} is missing (Scope, Reason, Approver, CreatedAt and ExpiresAt are all required)")
    if not isinstance(value, str):
        raise ExemptionError(f"{name} is not text: {_shown(value)}")
    return value.strip()


def _time_field(entity: Mapping[str, Any], name: str) -> datetime:
    value = entity.get(name)
    if value is None or value == "":
        raise ExemptionError(f"{name} is missing (Scope, Reason, Approver, CreatedAt and ExpiresAt are all required)")
    try:
        moment = as_utc(value)
    except (OverflowError, ValueError) as exc:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ExemptionError(f"{name} {_shown(value)} is not a date-time in UTC's range ({exc})") from None
    if moment is None:
        raise ExemptionError(f"{name} is not a date-time: {_shown(value)}")
    return moment


def exemption_from_entity(entity: Mapping[str, Any], *, max_days: int = MAX_EXEMPTION_DAYS) -> Exemption | None:
    """The exemption a row holds, or ``None`` when it is broken (:func:`read_exemption` says why)."""
    read = read_exemption(entity, max_days=max_days)
    return read if isinstance(read, Exemption) else None


def in_force(exemptions: Iterable[Exemption], now: datetime, *, include_expired: bool = False) -> list[Exemption]:
    """Exemptions for ``exempt list`` and the report, soonest expiry first."""
    return sorted((e for e in exemptions if include_expired or e.expires > now), key=lambda e: (e.expires, e.scope))
