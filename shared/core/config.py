"""Settings: the audit is configured only by environment variables (Function app settings).

Validation happens once, at start, and names the offending setting: a typo in an app setting
must stop the run loudly rather than audit the wrong thing quietly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlparse

from .errors import ConfigError
from .ids import subscription_id
from .names import fold

DEFAULT_SCHEDULE = "0 0 2 * * *"
DEFAULT_CHANGES_SCHEDULE = "0 */10 * * * *"  # every 10 minutes
DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
#: Tags read as a resource's owner, in order, compared case-insensitively (``AUDIT_OWNER_TAGS``).
DEFAULT_OWNER_TAGS: tuple[str, ...] = ("owner", "team", "contact")


#: The shortest run lease accepted (seconds): renewed every third of it, a lease this short still
#: leaves a slow table write 20 s before a renewal is late. Shorter is refused at settings load.
LEASE_FLOOR_SECONDS = 60


class InventorySource(StrEnum):
    """Where the inventory comes from (see bench/README.md, "Which inventory source")."""

    ARM = "arm"
    RESOURCE_GRAPH = "resourcegraph"


_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
# NCRONTAB as Azure Functions reads it: six fields {second} {minute} {hour} {day} {month} {dow}.
_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/\d+)?(,(\d+(-\d+)?|[A-Za-z]{3})(/\d+)?)*$")


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, already validated."""

    schedule: str = DEFAULT_SCHEDULE
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    table_service_uri: str | None = None
    table_connection_string: str | None = field(default=None, repr=False)
    results_table: str = "ClientCertAudit"
    latest_table: str = "ClientCertAuditLatest"
    runs_table: str = "ClientCertAuditRuns"
    exemptions_table: str = "ClientCertAuditExemptions"
    subscriptions: tuple[str, ...] = ()
    retention_days: int = 400
    concurrency: int = 8
    inventory_source: InventorySource = InventorySource.ARM
    http_timeout: int = 60
    retry_total: int = 4
    lease_seconds: int = 600
    run_deadline_minutes: int = 45
    client_id: str | None = None
    exemption_request_tag: str | None = None  # off when unset: a tag can only *request* an exemption
    owner_tags: tuple[str, ...] = DEFAULT_OWNER_TAGS
    changes_schedule: str | None = DEFAULT_CHANGES_SCHEDULE  # None: the change poll is off
    changes_overlap_minutes: int = 30

    @property
    def arm_scope(self) -> str:
        """Token scope for ARM: the endpoint's own audience works in every cloud."""
        return self.arm_endpoint.rstrip("/") + "/.default"


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer between {lo} and {hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _https_url(name: str, raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ConfigError(f"{name} must be an https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _table(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    if not _TABLE_NAME.match(value) or value.lower() == "tables":
        raise ConfigError(
            f"{name} must be a valid table name (3-63 letters or digits, starting with a letter), got {value!r}"
        )
    return value


def _tag_name(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if value and (len(value) > 512 or any(ch in value for ch in "<>%&\\?/")):
        raise ConfigError(f"{name} must be an Azure tag name (at most 512 characters, none of <>%&\\?/), got {value!r}")
    return value or None


def _owner_tags(env: Mapping[str, str]) -> tuple[str, ...]:
    """``AUDIT_OWNER_TAGS``: tag names tried in order; a name repeated in another casing is dropped
    (tag names compare case-insensitively), and an empty setting means the default."""
    names: dict[str, str] = {}
    for part in env.get("AUDIT_OWNER_TAGS", "").split(","):
        name = _tag_name({"AUDIT_OWNER_TAGS": part}, "AUDIT_OWNER_TAGS")
        if name:
            names.setdefault(fold(name), name)
    return tuple(names.values()) or DEFAULT_OWNER_TAGS


def validate_schedule(value: str, name: str = "AUDIT_SCHEDULE") -> str:
    """Accept a six-field NCRONTAB expression; reject anything the Functions host would not."""
    fields = value.split()
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ConfigError(
            f"{name} must be a six-field NCRONTAB expression like '{DEFAULT_SCHEDULE}' "
            f"({{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}), got {value!r}"
        )
    return value


def _subscriptions(raw: str) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for part in raw.replace(";", ",").split(","):
        item = part.strip()
        if not item:
            continue
        try:
            out.setdefault(subscription_id(item), None)
        except ValueError:
            raise ConfigError(f"AUDIT_SUBSCRIPTIONS contains {item!r}, which is not a subscription id") from None
    return tuple(out)


#: The defaults, in one place: the :class:`Settings` field defaults (what an unset setting means).
DEFAULTS = Settings()


def _table_source(env: Mapping[str, str], *, require_table: bool) -> tuple[str | None, str | None]:
    """``(service URI, connection string)``: exactly one of them when a table is required."""
    uri = env.get("AUDIT_TABLE_SERVICE_URI", "").strip() or None
    conn = env.get("AUDIT_TABLE_CONNECTION_STRING", "").strip() or None
    if require_table and bool(uri) == bool(conn):
        raise ConfigError(
            "Set exactly one of AUDIT_TABLE_SERVICE_URI (identity-based, for Azure) or "
            "AUDIT_TABLE_CONNECTION_STRING (local development only); " + ("both are set" if uri else "neither is set")
        )
    if conn and not all(k in conn for k in ("AccountName=", "TableEndpoint=")) and "UseDevelopmentStorage" not in conn:
        raise ConfigError("AUDIT_TABLE_CONNECTION_STRING is not a storage connection string (needs TableEndpoint=)")
    return uri, conn


def _inventory_source(env: Mapping[str, str]) -> InventorySource:
    raw = env.get("AUDIT_INVENTORY_SOURCE", "").strip().lower() or DEFAULTS.inventory_source.value
    try:
        return InventorySource(raw)
    except ValueError:
        raise ConfigError(f"AUDIT_INVENTORY_SOURCE must be 'arm' or 'resourcegraph', got {raw!r}") from None


def load_settings(env: Mapping[str, str] | None = None, *, require_table: bool = True) -> Settings:
    """Read and validate the settings from ``env`` (default: the process environment); an unset
    setting takes its :data:`DEFAULTS` value."""
    env = os.environ if env is None else env
    uri, conn = _table_source(env, require_table=require_table)
    source = _inventory_source(env)
    d = DEFAULTS
    return Settings(
        schedule=validate_schedule(env.get("AUDIT_SCHEDULE", "").strip() or d.schedule),
        arm_endpoint=_https_url("AUDIT_ARM_ENDPOINT", env.get("AUDIT_ARM_ENDPOINT", "").strip() or d.arm_endpoint),
        table_service_uri=_https_url("AUDIT_TABLE_SERVICE_URI", uri) if uri else None,
        table_connection_string=conn,
        results_table=_table(env, "AUDIT_RESULTS_TABLE", d.results_table),
        latest_table=_table(env, "AUDIT_LATEST_TABLE", d.latest_table),
        runs_table=_table(env, "AUDIT_RUNS_TABLE", d.runs_table),
        exemptions_table=_table(env, "AUDIT_EXEMPTIONS_TABLE", d.exemptions_table),
        subscriptions=_subscriptions(env.get("AUDIT_SUBSCRIPTIONS", "")),
        retention_days=_int(env, "AUDIT_RETENTION_DAYS", d.retention_days, 1, 36500),
        concurrency=_int(env, "AUDIT_CONCURRENCY", d.concurrency, 1, 64),
        inventory_source=source,
        http_timeout=_int(env, "AUDIT_HTTP_TIMEOUT", d.http_timeout, 1, 600),
        retry_total=_int(env, "AUDIT_RETRY_TOTAL", d.retry_total, 0, 10),
        lease_seconds=_int(env, "AUDIT_LEASE_SECONDS", d.lease_seconds, LEASE_FLOOR_SECONDS, 86400),
        run_deadline_minutes=_int(env, "AUDIT_RUN_DEADLINE_MINUTES", d.run_deadline_minutes, 1, 1440),
        client_id=env.get("AZURE_CLIENT_ID", "").strip() or None,
        exemption_request_tag=_tag_name(env, "AUDIT_EXEMPTION_REQUEST_TAG"),
        owner_tags=_owner_tags(env),
        changes_schedule=changes_schedule(env),
        changes_overlap_minutes=_int(env, "AUDIT_CHANGES_OVERLAP_MINUTES", 30, 1, 1440),
    )


def changes_schedule(env: Mapping[str, str] | None = None) -> str | None:
    """``AUDIT_CHANGES_SCHEDULE``: the change poll's NCRONTAB (default every 10 minutes), or
    ``None`` when it is ``off``. Read when the app is indexed, to register the poll or not."""
    env = os.environ if env is None else env
    raw = env.get("AUDIT_CHANGES_SCHEDULE", "").strip() or DEFAULT_CHANGES_SCHEDULE
    if raw.lower() == "off":
        return None
    return validate_schedule(raw, "AUDIT_CHANGES_SCHEDULE")
