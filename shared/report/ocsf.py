"""``report --format ocsf``: one OCSF Detection Finding (class 2004) per selected row, as JSON lines.

OCSF (the Open Cybersecurity Schema Framework) is what SIEM pipelines ingest: Microsoft Sentinel,
Amazon Security Lake, Splunk. Events follow OCSF :data:`OCSF_VERSION` with the ``cloud`` profile, and
``tests/integration/test_report_security.py`` validates them against that version's published schema (the
``ocsf-json-schema`` package ships the schema export of schema.ocsf.io). What OCSF has no attribute
for (the certificate mode, exclusion paths, the exemption) goes to ``unmapped``.

Mapping of our statuses (``status_code`` keeps ours verbatim):

======  =====================  ===================  ==================================
ours    status_id / status     severity_id          activity_id
======  =====================  ===================  ==================================
FAIL    1 New                  4 High               1 Create when new, else 2 Update
WARN    1 New                  3 Medium             1 Create when new, else 2 Update
ERROR   99 Other ("Error")     3 Medium             2 Update
EXEMPT  3 Suppressed           1 Informational      2 Update
PASS    4 Resolved             1 Informational      3 Close after FAIL/WARN, else 2 Update
======  =====================  ===================  ==================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import IO, Any

from ..core.keys import resource_key
from ..core.when import as_utc
from .fixscript import portal_link
from .summary import ReportContext, Summary
from .values import resource_label

OCSF_VERSION = "1.5.0"
CLASS_UID = 2004  # Detection Finding
CATEGORY_UID = 2  # Findings
CHECK_ID = "appservice-incoming-client-certificates"
CHECK_TITLE = "App Service requires incoming client certificates"
PRODUCT = "clientcert-audit"
DOCS = "https://learn.microsoft.com/azure/app-service/app-service-web-configure-tls-mutual-auth"

#: Our status -> OCSF ``(status_id, status, severity_id, severity)`` (the module docstring's table).
_MAPPING: dict[str, tuple[int, str, int, str]] = {
    "FAIL": (1, "New", 4, "High"),
    "WARN": (1, "New", 3, "Medium"),
    "ERROR": (99, "Error", 3, "Medium"),
    "EXEMPT": (3, "Suppressed", 1, "Informational"),
    "PASS": (4, "Resolved", 1, "Informational"),
}
_ACTIVITY = {1: "Create", 2: "Update", 3: "Close"}


def _product_version() -> str:
    try:
        return metadata.version(PRODUCT)
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0"


def _epoch_ms(value: Any) -> int | None:
    """OCSF ``timestamp_t``: milliseconds since the epoch, from a datetime or an ISO 8601 string."""
    moment = as_utc(value)
    return None if moment is None else int(moment.timestamp() * 1000)


def finding_uid(row: Mapping[str, Any]) -> str:
    """Stable per resource and check: the same resource gets the same uid every night, in any casing."""
    return f"{PRODUCT}:{CHECK_ID}:{resource_key(str(row.get('ResourceId') or ''))}"


def _activity(status: str, row: Mapping[str, Any]) -> int:
    if status in ("FAIL", "WARN") and (row.get("NewFailure") is True or not row.get("PreviousStatus")):
        return 1
    if status == "PASS" and row.get("PreviousStatus") in ("FAIL", "WARN"):
        return 3
    return 2


def _tags(row: Mapping[str, Any]) -> list[dict[str, str]]:
    try:
        tags = json.loads(str(row.get("Tags") or "{}"))
    except ValueError:
        return []
    return [{"name": str(k), "value": str(v)} for k, v in tags.items()] if isinstance(tags, dict) else []


def _resource(row: Mapping[str, Any]) -> dict[str, Any]:
    slot = bool(row.get("Slot"))
    scope = not row.get("AppName")
    resource: dict[str, Any] = {
        "uid": str(row.get("ResourceId") or ""),
        "name": resource_label(row),
        "type": "Microsoft.Resources/scope"
        if scope
        else ("Microsoft.Web/sites/slots" if slot else "Microsoft.Web/sites"),
    }
    if row.get("Location"):
        resource["region"] = str(row["Location"])
    if row.get("ResourceGroup"):
        resource["group"] = {"name": str(row["ResourceGroup"]), "type": "Resource group"}
    if row.get("Owner"):
        resource["owner"] = {"name": str(row["Owner"])}
    if tags := _tags(row):
        resource["tags"] = tags
    return resource


def _unmapped(row: Mapping[str, Any]) -> dict[str, Any]:
    paths = [p.strip() for p in str(row.get("ExclusionPaths") or "").split(",") if p.strip()]
    out: dict[str, Any] = {
        "client_cert_enabled": row.get("ClientCertEnabled"),
        "client_cert_mode": row.get("ClientCertMode") or "",
        "client_cert_exclusion_paths": paths,
        "exemption": row.get("Exemption") or "",
        "exemption_request": row.get("ExemptionRequest") or "",
        "new_failure": row.get("NewFailure") is True,
        "previous_status": row.get("PreviousStatus") or "",
        "https_only": row.get("HttpsOnly"),
        "public_network_access": row.get("PublicNetworkAccess") or "",
        "kind": row.get("Kind") or "",
        "run_id": row.get("RunId") or "",
    }
    return {k: v for k, v in out.items() if v is not None}


def _finding_info(row: Mapping[str, Any], audited: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "uid": finding_uid(row),
        "title": CHECK_TITLE,
        "desc": str(row.get("Reason") or ""),
        "types": [CHECK_ID],
        "product_uid": PRODUCT,
    }
    if first_failed := _epoch_ms(row.get("FirstFailedAt")):
        info["first_seen_time"] = first_failed
    if audited:
        info["last_seen_time"] = audited
    return info


def _cloud(row: Mapping[str, Any]) -> dict[str, Any]:
    account: dict[str, Any] = {"uid": str(row.get("SubscriptionId") or ""), "type_id": 13, "type": "Azure Subscription"}
    if row.get("SubscriptionName"):
        account["name"] = str(row["SubscriptionName"])
    return {"provider": "Azure", "account": account, **({"region": row["Location"]} if row.get("Location") else {})}


def _metadata(product_version: str) -> dict[str, Any]:
    return {
        "version": OCSF_VERSION,
        "product": {"name": PRODUCT, "vendor_name": PRODUCT, "version": product_version or _product_version()},
        "profiles": ["cloud"],
        "event_code": CHECK_ID,
        "log_name": "ClientCertAudit",
    }


def detection_finding(row: Mapping[str, Any], product_version: str = "", tenant: str = "") -> dict[str, Any]:
    """One result row as an OCSF Detection Finding (class 2004, ``cloud`` profile)."""
    status = str(row.get("Status") or "")
    status_id, status_name, severity_id, severity = _MAPPING.get(status, (0, "Unknown", 0, "Unknown"))
    activity_id = _activity(status, row)
    audited = _epoch_ms(row.get("AuditedAt")) or 0
    event: dict[str, Any] = {
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": _ACTIVITY[activity_id],
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": f"Detection Finding: {_ACTIVITY[activity_id]}",
        "time": audited,
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status_name,
        "status_code": status,
        "status_detail": str(row.get("Reason") or ""),
        "message": f"{status}: {resource_label(row)}: {row.get('Reason') or ''}",
        "metadata": _metadata(product_version),
        "cloud": _cloud(row),
        "finding_info": _finding_info(row, audited),
        "resources": [_resource(row)],
        "unmapped": _unmapped(row),
    }
    if row.get("Remediation"):
        references = [portal_link(str(row.get("ResourceId") or ""), tenant), DOCS] if row.get("AppName") else [DOCS]
        event["remediation"] = {"desc": str(row["Remediation"]), "references": references}
    return event


def write_ocsf(rows: Iterable[Mapping[str, Any]], out: IO[str], ctx: ReportContext) -> Summary:
    """Every selected row as one JSON line (streamed: any number of rows in constant memory)."""
    summary = ctx.summary()
    version = _product_version()
    for row in rows:
        summary.add(row)
        out.write(json.dumps(detection_finding(row, version, ctx.tenant_of(row)), ensure_ascii=False) + "\n")
    return summary
