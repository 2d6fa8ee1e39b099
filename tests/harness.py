"""Runs the real timer function against the emulators and reads back what it wrote.

The function is invoked as the Functions Python worker does: find it in
``app.get_functions()``, then call ``get_user_function()`` with a ``TimerRequest`` and a
``func.Context`` whose ``thread_local_storage`` is the worker's thread-local, set on the invoking
thread only. What the worker and host then do with each log record is modelled by
:class:`HostLogs`: the record carries the invocation id the *emitting* thread's thread-local holds,
and the host keeps it only when that is a running invocation. Events are read from what the host
kept, so every end-to-end test also shows its events would reach Application Insights.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import TableServiceClient
from azure.functions.timer import TimerRequest

from shared.azure.threads import invocation_initializer
from shared.core.config import load_settings
from shared.core.errors import RunInProgressError
from shared.core.events import EVENT_LOGGER_NAME, NEW_FAILURE_EVENT, RUN_SUMMARY_EVENT
from shared.run.audit import run_audit
from shared.run.changes import poll_changes
from tests.emulators.arm import ArmEmulator
from tests.emulators.azurite import Azurite
from tests.emulators.proxy import FaultProxy


@functools.cache
def _indexed() -> dict[str, Any]:
    """``function_app``'s functions as the worker indexes them (once per process:
    ``get_functions()`` refuses to index the same app twice)."""
    function_app = importlib.import_module("function_app")
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def timer_function(name: str = "clientcert_audit") -> Any:
    """One timer function of ``function_app``: the nightly audit, or ``clientcert_changes``."""
    functions = _indexed()
    assert set(functions) == {"clientcert_audit", "clientcert_changes"}, sorted(functions)
    return functions[name]


#: Where azure.functions logs from while the worker indexes the app (before any invocation).
INDEXING_SOURCE = "decorators"

#: The worker's thread-local (``_invocation_id_local`` in azure_functions_worker): the object it hands
#: to functions as ``context.thread_local_storage`` and reads when it tags a log record.
WORKER_THREAD_LOCAL = threading.local()


class WorkerContext(func.Context):
    """The ``func.Context`` the worker passes to a function that takes ``context``."""

    def __init__(self, invocation_id: str, function_name: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return WORKER_THREAD_LOCAL

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return "."

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


class HostLogs(logging.Handler):
    """The worker's log handler and the host's filter: a record is tagged with the invocation id
    read from the emitting thread's :data:`WORKER_THREAD_LOCAL`; the host keeps it only when that
    id is a running invocation, and drops it otherwise (as it does user logs it cannot attribute)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.running: set[str] = set()
        self.kept: list[logging.LogRecord] = []
        self.dropped: list[logging.LogRecord] = []
        self._lock_list = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        invocation_id = getattr(WORKER_THREAD_LOCAL, "invocation_id", None)
        with self._lock_list:
            (self.kept if invocation_id in self.running else self.dropped).append(record)

    def invoke(self, function: Any, *args: Any) -> None:
        """Call the user function as the worker does, with a fresh invocation id."""
        invocation_id = str(uuid.uuid4())
        context = WorkerContext(invocation_id, function.__name__)
        self.running.add(invocation_id)
        WORKER_THREAD_LOCAL.invocation_id = invocation_id  # on the invoking thread only
        try:
            function(*args, context=context)
        finally:
            WORKER_THREAD_LOCAL.invocation_id = None
            self.running.discard(invocation_id)

    def clear(self) -> None:
        with self._lock_list:
            self.kept.clear()
            self.dropped.clear()


def event_payloads(records: list[logging.LogRecord], prefix: str) -> list[dict[str, Any]]:
    import json

    out = []
    for record in records:
        message = record.getMessage()
        if message.startswith(prefix + " "):
            out.append(json.loads(message[len(prefix) + 1 :]))
    return out


@dataclass
class AuditHarness:
    """One isolated audit deployment: its own table names on the shared Azurite."""

    arm: ArmEmulator
    azurite: Azurite
    monkeypatch: pytest.MonkeyPatch
    caplog: pytest.LogCaptureFixture
    host: HostLogs = field(default_factory=HostLogs)
    env: dict[str, str] = field(default_factory=dict)
    proxy: FaultProxy | None = None

    def __post_init__(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.tables = {
            "AUDIT_RESULTS_TABLE": f"Results{suffix}",
            "AUDIT_LATEST_TABLE": f"Latest{suffix}",
            "AUDIT_RUNS_TABLE": f"Runs{suffix}",
            "AUDIT_EXEMPTIONS_TABLE": f"Exempt{suffix}",
        }
        self.env = {
            **self.arm.env(),
            "AUDIT_TABLE_SERVICE_URI": self.azurite.table_service_uri,
            "AUDIT_SCHEDULE": "0 0 2 * * *",
            "AUDIT_RETRY_TOTAL": "3",
            "AUDIT_HTTP_TIMEOUT": "10",
            **self.tables,
        }
        self.apply_env()
        self.caplog.set_level(logging.INFO, logger=EVENT_LOGGER_NAME)
        self.caplog.set_level(logging.INFO, logger="shared")

    def service_clock(self) -> FaultProxy:
        """Route the function's table requests through a proxy whose ``date_offset`` moves the table
        service's clock (the one the lease is judged by); returns the proxy. Stopped by :meth:`close`."""
        if self.proxy is None:
            self.proxy = FaultProxy(self.azurite.port, self.azurite.tls).start()
            self.env["AUDIT_TABLE_SERVICE_URI"] = self.proxy.url()
            self.apply_env()
        return self.proxy

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None

    def apply_env(self, **extra: str) -> None:
        for key in ("AUDIT_TABLE_CONNECTION_STRING", "AUDIT_SUBSCRIPTIONS", "AZURE_CLIENT_ID"):
            self.monkeypatch.delenv(key, raising=False)
        for key, value in {**self.env, **extra}.items():
            self.monkeypatch.setenv(key, value)

    # -- running ----------------------------------------------------------------------------
    def run_timer(self) -> None:
        """Invoke the timer function exactly as the Functions worker would."""
        self.host.invoke(timer_function().get_user_function(), TimerRequest(past_due=False))

    def run_changes_timer(self) -> None:
        """Invoke the change-poll timer function exactly as the Functions worker would."""
        self.host.invoke(timer_function("clientcert_changes").get_user_function(), TimerRequest(past_due=False))

    def poll_at(self, at: datetime, checkpoint: Any = None) -> Any:
        """What the change-poll timer does, in a worker invocation, with the clock at ``at``;
        returns the poll's result (``None`` when it was skipped for the lease)."""
        out: list[Any] = []

        def clientcert_changes(context: Any) -> None:
            try:
                out.append(
                    poll_changes(
                        load_settings(), thread_init=invocation_initializer(context), now=lambda: at, checkpoint=checkpoint
                    )
                )
            except RunInProgressError as exc:
                logging.info("ClientCertAudit change poll skipped: %s", exc)

        self.host.invoke(clientcert_changes)
        return out[0] if out else None

    def run_at(self, at: datetime, checkpoint: Any = None) -> None:
        """What the timer function does, in a worker invocation, with the run's clock at ``at``
        (nights apart, or hours) and an optional engine ``checkpoint`` hook."""

        def clientcert_audit(context: Any) -> None:
            try:
                run_audit(
                    load_settings(), thread_init=invocation_initializer(context), now=lambda: at, checkpoint=checkpoint
                )
            except RunInProgressError as exc:  # as function_app does: an overlapping run skips
                logging.warning("ClientCertAudit skipped: %s", exc)

        self.host.invoke(clientcert_audit)

    # -- reading back -------------------------------------------------------------------------
    def service(self) -> TableServiceClient:
        return TableServiceClient.from_connection_string(self.azurite.connection_string)

    def table(self, setting: str) -> list[dict[str, Any]]:
        with self.service() as svc:
            return [dict(e) for e in svc.get_table_client(self.tables[setting]).list_entities()]

    def runs(self) -> list[dict[str, Any]]:
        rows = [r for r in self.table("AUDIT_RUNS_TABLE") if r["PartitionKey"] == "run"]
        return sorted(rows, key=lambda r: r["RowKey"])

    def last_run_id(self) -> str:
        return str(self.runs()[-1]["RunId"])

    def rows(self, run_id: str | None = None) -> list[dict[str, Any]]:
        run_id = run_id or self.last_run_id()
        with self.service() as svc:
            client = svc.get_table_client(self.tables["AUDIT_RESULTS_TABLE"])
            flt = f"PartitionKey ge '{run_id}_' and PartitionKey lt '{run_id}`'"
            return [dict(e) for e in client.query_entities(flt)]

    def rows_by_id(self, run_id: str | None = None) -> dict[str, dict[str, Any]]:
        rows = self.rows(run_id)
        by_id = {r["ResourceId"].lower(): r for r in rows}
        assert len(by_id) == len(rows), "duplicate rows for one resource in one run"
        return by_id

    def state(self) -> dict[str, dict[str, Any]]:
        return {r["ResourceId"].lower(): r for r in self.table("AUDIT_LATEST_TABLE")}

    def events(self, prefix: str) -> list[dict[str, Any]]:
        """Events the host would ship to Application Insights (records it would drop are not here)."""
        records = [r for r in self.host.kept if r.name == EVENT_LOGGER_NAME]
        return event_payloads(records, prefix)

    def dropped_by_host(self) -> list[logging.LogRecord]:
        """Records the host would drop that matter: any event, any WARNING or above (except what
        azure.functions logs while the worker indexes the app, which is not an invocation's)."""
        return [
            r
            for r in self.host.dropped
            if (r.name == EVENT_LOGGER_NAME or r.levelno >= logging.WARNING)
            and INDEXING_SOURCE not in Path(r.pathname).parts
        ]

    def new_failure_events(self) -> list[dict[str, Any]]:
        return self.events(NEW_FAILURE_EVENT)

    def run_summaries(self) -> list[dict[str, Any]]:
        return self.events(RUN_SUMMARY_EVENT)

    def clear_events(self) -> None:
        self.caplog.clear()
        self.host.clear()
