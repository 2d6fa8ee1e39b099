"""The pure core: decide a resource's effective client certificate mode and its status.

No I/O and no SDK types: plain data in, findings out, so every rule is unit-tested
exhaustively and the same code serves the ARM and Resource Graph inventories.
"""

from __future__ import annotations

import re
import shlex

from .models import CertMode, Finding, InventoryError, SiteRecord, Status
from .roles import AUDIT_READER_ROLE

_PATH_SPLIT = re.compile(r"[,;]")
_KNOWN_MODES = {m.value.lower(): m.value for m in CertMode if m is not CertMode.IGNORE}


def effective_mode(client_cert_enabled: bool | None, client_cert_mode: str | None) -> str:
    """Return the mode App Service actually enforces.

    ``clientCertEnabled`` not true means certificates are ignored *whatever* ``clientCertMode``
    says: Azure reports ``clientCertMode: Required`` on apps that have certificates off. With
    certificates on and no mode, the platform default is ``Required``. Known modes are returned
    in canonical casing; an unknown value is returned as ARM sent it (and fails).
    """
    if client_cert_enabled is not True:
        return CertMode.IGNORE.value
    if client_cert_mode is None or not str(client_cert_mode).strip():
        return CertMode.REQUIRED.value
    raw = str(client_cert_mode).strip()
    return _KNOWN_MODES.get(raw.lower(), raw)


def split_exclusion_paths(raw: str | None) -> tuple[str, ...]:
    """Split ``clientCertExclusionPaths`` on ``,`` and ``;``, dropping blanks and duplicates."""
    if not raw:
        return ()
    seen: dict[str, None] = {}
    for part in _PATH_SPLIT.split(str(raw)):
        path = part.strip()
        if path:
            seen.setdefault(path, None)
    return tuple(seen)


def _az_target(record: SiteRecord) -> str:
    """The resource's ``az`` arguments, each quoted for bash (names like ``rg(legacy)`` or with
    unicode must paste as they are), with ``--subscription`` so the command fixes this resource
    whichever subscription the shell's ``az`` has selected."""
    args = ["--name", record.app_name, "--resource-group", record.resource_group]
    if record.slot:
        args += ["--slot", record.slot]
    if record.subscription_id:
        args += ["--subscription", record.subscription_id]
    return shlex.join(args)


#: An exclusion path App Service matches as a prefix of every request path: no requirement at all.
EVERY_PATH = "/"


def exempts_every_path(paths: tuple[str, ...]) -> bool:
    """``/`` is a prefix of every request path, so an exclusion list holding it exempts them all."""
    return EVERY_PATH in paths


def plain_http_open(record: SiteRecord) -> bool:
    """Requests over plain HTTP carry no client certificate (App Service's mutual-TLS docs), so an
    app that does not redirect HTTP to HTTPS (``httpsOnly`` not true) accepts requests without one."""
    return record.https_only is not True


def remediation_for(record: SiteRecord, mode: str, paths: tuple[str, ...]) -> str:
    """A concrete fix: where to click in the portal and the ``az`` command that does it.

    The command sets everything the verdict depends on at once: the mode, the exclusion paths when
    they exempt every path, and ``httpsOnly`` when plain HTTP is open, so one command turns a FAIL
    into a PASS (or a WARN when other exclusion paths remain to be reviewed).
    """
    target = _az_target(record)
    portal = "Portal: App Service > Configuration > General settings > Incoming client certificates"
    https = plain_http_open(record)
    https_set = " httpsOnly=true" if https else ""
    https_note = " and turn on 'HTTPS Only'" if https else ""
    if mode == CertMode.REQUIRED.value:
        if exempts_every_path(paths):
            return (
                f"{portal}: remove the exclusion path '/', which exempts every request{https_note}. "
                f'az webapp update {target} --set clientCertExclusionPaths=""{https_set}'
            )
        if https:
            return (
                "Portal: App Service > Configuration > General settings: turn on 'HTTPS Only' (requests over "
                f"HTTP carry no client certificate). az webapp update {target} --set httpsOnly=true"
            )
        if paths:
            return (
                f"{portal}: remove the certificate exclusion paths if they are not needed. "
                f'az webapp update {target} --set clientCertExclusionPaths=""'
            )
        return ""
    return (
        f"{portal}: set 'Client certificate mode' to Require{https_note}. "
        f"az webapp update {target} --set clientCertEnabled=true clientCertMode=Required{https_set}"
    )


def _required_reason(record: SiteRecord, paths: tuple[str, ...]) -> tuple[Status, str]:
    """Mode ``Required``: FAIL when a hole makes the requirement void (every path exempt, or plain
    HTTP accepted; FAIL wins over WARN and both are named), WARN for other exclusion paths."""
    holes = []
    if exempts_every_path(paths):
        holes.append(
            "the exclusion path '/' exempts every request path (exclusion paths match as prefixes), "
            "so no request needs a certificate"
        )
    if plain_http_open(record):
        holes.append(
            "HTTPS Only is off (httpsOnly is not true), so requests over plain HTTP, which carry no client "
            "certificate, are accepted"
        )
    if holes:
        return Status.FAIL, "Client certificates are set to Required, but " + "; and ".join(holes) + "."
    if paths:
        return Status.WARN, (
            "Client certificates are required except on these paths, which accept requests "
            f"without one: {', '.join(paths)}"
        )
    return Status.PASS, "Client certificates are required on every request."


def _reason(mode: str, record: SiteRecord, paths: tuple[str, ...]) -> tuple[Status, str]:
    if mode == CertMode.REQUIRED.value:
        return _required_reason(record, paths)
    if mode == CertMode.IGNORE.value:
        note = (
            f" (clientCertMode reports '{record.client_cert_mode}', but it has no effect while "
            "certificates are disabled)"
            if record.client_cert_mode
            else ""
        )
        return Status.FAIL, f"Client certificates are disabled (clientCertEnabled is not true){note}."
    if mode == CertMode.OPTIONAL.value:
        return Status.FAIL, "Client certificates are optional (Allow): requests without one are accepted."
    if mode == CertMode.OPTIONAL_INTERACTIVE_USER.value:
        return Status.FAIL, (
            "Client certificates are optional for interactive users (OptionalInteractiveUser): "
            "browser requests without one are accepted."
        )
    return Status.FAIL, f"Unknown client certificate mode '{mode}': treated as not enforced."


def evaluate(record: SiteRecord) -> Finding:
    """Evaluate one site or slot. Total function: any input yields a finding, never raises."""
    mode = effective_mode(record.client_cert_enabled, record.client_cert_mode)
    paths = split_exclusion_paths(record.exclusion_paths) if mode == CertMode.REQUIRED.value else ()
    status, reason = _reason(mode, record, paths)
    return Finding(
        resource_id=record.resource_id,
        subscription_id=record.subscription_id,
        resource_group=record.resource_group,
        app_name=record.app_name,
        slot=record.slot,
        kind=record.kind,
        state=record.state,
        location=record.location,
        client_cert_enabled=record.client_cert_enabled is True,
        client_cert_mode=mode,
        exclusion_paths=paths,
        status=status,
        reason=reason,
        remediation=remediation_for(record, mode, paths),
        https_only=record.https_only,
        public_network_access=record.public_network_access,
        tags=record.tags,
    )


def error_finding(error: InventoryError) -> Finding:
    """A visible ERROR row for a scope that could not be read, instead of a silent gap."""
    return Finding(
        resource_id=error.scope_id,
        subscription_id=error.subscription_id,
        resource_group=error.resource_group,
        app_name="",
        slot="",
        kind="",
        state="",
        location="",
        client_cert_enabled=False,
        client_cert_mode="",
        exclusion_paths=(),
        status=Status.ERROR,
        reason=error.message,
        remediation=error.remediation
        or (
            f"Check that the audit identity has the '{AUDIT_READER_ROLE}' role on this scope (assigned by "
            "infra/tenant/audit-reader-role.bicep) and that the subscription is active; the next run retries "
            "automatically."
        ),
    )
