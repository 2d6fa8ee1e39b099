"""Plain records that flow through the audit: inventory → evaluation → store → alert.

Nothing here does I/O. The inventory adapters produce :class:`SiteRecord` and
:class:`InventoryError`; the pure evaluation turns a record into a :class:`Finding`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .names import fold


def valid_text(value: str) -> str:
    """``value`` as text every encoder accepts: a lone UTF-16 surrogate becomes U+FFFD.

    JSON may carry ``"\\ud800"`` without its pair, and Python decodes it to a lone surrogate, which
    no UTF-8 encoder takes: one such tag, name or path would fail every batch, event and report it
    reached. Estate text is made valid here, where ARM's JSON becomes a record, so everything
    downstream (evaluation, rows, events, every output) holds only valid text. A surrogate *pair*
    written as two escapes is joined into its character; everything else is returned unchanged.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


class Status(StrEnum):
    """Outcome of one audited resource (or of one unreadable scope, for ERROR)."""

    PASS = "PASS"  # noqa: S105 (a status, not a password)
    WARN = "WARN"
    FAIL = "FAIL"
    EXEMPT = "EXEMPT"
    ERROR = "ERROR"


class CertMode(StrEnum):
    """Effective incoming client certificate mode, after ``clientCertEnabled`` is applied."""

    REQUIRED = "Required"
    OPTIONAL = "Optional"
    OPTIONAL_INTERACTIVE_USER = "OptionalInteractiveUser"
    IGNORE = "Ignore"


@dataclass(frozen=True, slots=True)
class SiteRecord:
    """One ``Microsoft.Web/sites`` resource or deployment slot, as ARM listed it.

    Fields hold what ARM returned (``None`` when absent) so the evaluation, not the
    adapter, decides what a missing value means.
    """

    resource_id: str
    subscription_id: str
    resource_group: str
    app_name: str
    slot: str = ""
    kind: str = ""
    state: str = ""
    location: str = ""
    client_cert_enabled: bool | None = None
    client_cert_mode: str | None = None
    exclusion_paths: str | None = None
    https_only: bool | None = None
    public_network_access: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    owner: str = ""  # from the tags named by AUDIT_OWNER_TAGS; a slot falls back to its site's

    @property
    def key(self) -> str:
        """Identity as ARM compares ids (:func:`~shared.core.names.fold`): ARM returns one id in many casings."""
        return fold(self.resource_id)


@dataclass(frozen=True, slots=True)
class GoneRecord:
    """A resource an inventory confirmed deleted (its GET answered 404): its state may be retired
    even though the rest of its subscription was not listed (the change poll's re-reads)."""

    resource_id: str
    subscription_id: str

    @property
    def key(self) -> str:
        return fold(self.resource_id)


@dataclass(frozen=True, slots=True)
class InventoryError:
    """A scope (subscription, resource group, slot list) that could not be read."""

    scope_id: str
    subscription_id: str
    message: str
    resource_group: str = ""
    status_code: int | None = None
    remediation: str = ""  # what the security team should do, when the default advice does not hold

    def __post_init__(self) -> None:
        """Its text comes from ARM (ids, error messages): made valid like a site record's."""
        for name in ("scope_id", "subscription_id", "message", "resource_group"):
            value = getattr(self, name)
            if isinstance(value, str) and not value.isascii():
                object.__setattr__(self, name, valid_text(value))


#: The properties that name a resource, alike in result rows, state rows and events.
IDENTITY_FIELDS = ("ResourceId", "SubscriptionId", "ResourceGroup", "AppName", "Slot", "Kind")


@dataclass(frozen=True, slots=True)
class Finding:
    """The verdict for one resource or one unreadable scope."""

    resource_id: str
    subscription_id: str
    resource_group: str
    app_name: str
    slot: str
    kind: str
    state: str
    location: str
    client_cert_enabled: bool
    client_cert_mode: str
    exclusion_paths: tuple[str, ...]
    status: Status
    reason: str
    remediation: str
    https_only: bool | None = None
    public_network_access: str | None = None
    exemption: str = ""
    tags: tuple[tuple[str, str], ...] = field(default=())
    owner: str = ""

    @property
    def key(self) -> str:
        """Identity of the resource as ARM compares ids."""
        return fold(self.resource_id)

    def identity(self) -> dict[str, str]:
        """The properties that name the resource, alike in result rows, state rows and events."""
        return {
            "ResourceId": self.resource_id,
            "SubscriptionId": self.subscription_id,
            "ResourceGroup": self.resource_group,
            "AppName": self.app_name,
            "Slot": self.slot,
            "Kind": self.kind,
        }
