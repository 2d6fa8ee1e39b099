"""The pure core: decide a resource's effective client certificate mode and its status.

No I/O and no SDK types: plain data in, findings out, so every rule is unit-tested
exhaustively and the same code serves the ARM and Resource Graph inventories.
"""

from __future__ import annotations

import re
import shlex

from .fixcommand import FixValue, fix_command
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


#: An exclusion path App Service matches as a prefix of every request path: no requirement at all.
EVERY_PATH = "/"


def exempts_every_path(paths: tuple[str, ...]) -> bool:
    """``/`` is a prefix of every request path, so an exclusion list holding it exempts them all."""
    return EVERY_PATH in paths


def plain_http_open(record: SiteRecord) -> bool:
    """Requests over plain HTTP carry no client certificate (App Service's mutual-TLS docs), so an
    app that does not redirect HTTP to HTTPS (``httpsOnly`` not true) accepts requests without one."""
    return record.https_only is not True


def without_every_path(raw: str | None) -> str:
    """``clientCertExclusionPaths`` with ``/`` taken out and every other path kept, in order, joined by
    the separator the value used (``,`` when it had none): the fix for "``/`` exempts every request"
    must not also drop the paths an owner still needs."""
    kept = [path for path in split_exclusion_paths(raw) if path != EVERY_PATH]
    found = _PATH_SPLIT.search(raw or "")
    return (found.group() if found else ",").join(kept)


def fix_properties(record: SiteRecord, mode: str, paths: tuple[str, ...]) -> dict[str, FixValue]:
    """The properties that turn this resource into a PASS (a WARN when other exclusion paths remain):
    the mode, ``/`` out of the exclusion paths *whatever the mode* (a mode set to Required would
    otherwise still exempt every path), and ``httpsOnly``; or, for a WARN, the exclusion paths cleared."""
    every_path = exempts_every_path(split_exclusion_paths(record.exclusion_paths))
    properties: dict[str, FixValue] = {}
    if mode != CertMode.REQUIRED.value:
        properties.update(clientCertEnabled=True, clientCertMode=CertMode.REQUIRED.value)
    if every_path:
        properties["clientCertExclusionPaths"] = without_every_path(record.exclusion_paths)
    if plain_http_open(record):
        properties["httpsOnly"] = True
    if not properties and paths:
        properties["clientCertExclusionPaths"] = ""
    return properties


def remediation_for(record: SiteRecord, mode: str, paths: tuple[str, ...]) -> str:
    """A concrete fix: where to click in the portal, then the ``az`` command that does it all at once.

    The command (:mod:`shared.core.fixcommand`: the right ``az`` command for the site's ``kind``, every
    option written ``--option=value``) sets everything the verdict depends on, so one command turns a
    FAIL into a PASS, or a WARN when other exclusion paths remain to be reviewed. The text before the
    command is ours only: no value from the estate precedes it (the fix script finds the command by
    its ``az`` prefix).
    """
    properties = fix_properties(record, mode, paths)
    if not properties:
        return ""
    steps = []
    if "clientCertMode" in properties:
        steps.append("under Incoming client certificates, set 'Client certificate mode' to Require")
    if "clientCertExclusionPaths" not in properties:
        pass
    elif exempts_every_path(split_exclusion_paths(record.exclusion_paths)):
        kept = " (keep the other exclusion paths)" if properties["clientCertExclusionPaths"] else ""
        steps.append(f"remove the certificate exclusion path '/', which exempts every request{kept}")
    else:
        steps.append("remove the certificate exclusion paths if they are not needed")
    if "httpsOnly" in properties:
        steps.append("turn on 'HTTPS Only' (requests over HTTP carry no client certificate)")
    command = shlex.join(fix_command(record, properties))
    return f"Portal: App Service > Configuration > General settings: {'; '.join(steps)}. {command}"


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
