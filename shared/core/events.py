"""Alert events: the one place that knows the names Azure Monitor alert rules query.

The Functions host ships Python ``logging`` records to Application Insights as ``AppTraces``;
the scheduled query rules in ``infra/`` match on these message prefixes, so they are a contract.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

NEW_FAILURE_EVENT = "ClientCertAudit.NewFailure"
RUN_SUMMARY_EVENT = "ClientCertAudit.RunSummary"
EVENT_LOGGER_NAME = "clientcert_audit.events"

_log = logging.getLogger(EVENT_LOGGER_NAME)


def format_event(prefix: str, payload: Mapping[str, Any]) -> str:
    """Render ``<prefix> <compact JSON>``; KQL parses the JSON after the first space."""
    return f"{prefix} {json.dumps(payload, sort_keys=True, separators=(',', ':'), default=str)}"


def emit_new_failure(payload: Mapping[str, Any]) -> None:
    """One WARNING record per resource that newly fails (alert rule splits on ResourceId)."""
    _log.warning(format_event(NEW_FAILURE_EVENT, payload))


def emit_run_summary(payload: Mapping[str, Any], *, failed: bool = False) -> None:
    """Exactly one record per run; WARNING when the run was partial or failed, else INFO."""
    _log.log(logging.WARNING if failed else logging.INFO, format_event(RUN_SUMMARY_EVENT, payload))
