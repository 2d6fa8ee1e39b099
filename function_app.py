"""Azure Functions entry point (Python v2 model): a thin adapter over the ``shared`` engine.

Reads the settings, runs the audit, logs the summary. A run that could audit nothing raises,
so the Functions host records the invocation as failed; partial failures are ERROR rows.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.azure.threads import invocation_initializer
from shared.core.config import changes_schedule, load_settings
from shared.core.errors import RunInProgressError
from shared.run.audit import run_audit
from shared.run.changes import poll_changes
from shared.run.memory import limit_malloc_arenas

# host.json's logLevel categories do not filter Python loggers (the host files every user record
# under Function.<name>.User), so azure-core's per-request traces are cut here, as the CLI does.
logging.getLogger("azure").setLevel(logging.WARNING)
limit_malloc_arenas()  # before the audit starts its threads: RSS stays near Python's own heap

app = func.FunctionApp()


@app.timer_trigger(schedule="%AUDIT_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def clientcert_audit(timer: func.TimerRequest, context: func.Context) -> None:
    """Nightly audit of incoming client certificate settings across the tenant.

    ``context`` gives every thread the audit starts the invocation id, without which the host
    drops their records (the NewFailure events among them).
    """
    if getattr(timer, "past_due", False):
        logging.warning("ClientCertAudit timer is past due; running now")
    settings = load_settings()
    try:
        summary = run_audit(settings, thread_init=invocation_initializer(context))
    except RunInProgressError as exc:
        logging.warning("ClientCertAudit skipped: %s", exc)
        return
    logging.info(
        "ClientCertAudit run %s %s: %s; %d new failures, %d alerts sent; %d subscriptions read, %d failed; %.1fs",
        summary.run_id,
        summary.outcome,
        ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())),
        summary.new_failures,
        summary.alerts_sent,
        summary.subscriptions_read,
        summary.subscriptions_failed,
        summary.duration_seconds,
    )


_CHANGES_SCHEDULE = changes_schedule()
if _CHANGES_SCHEDULE is not None:  # AUDIT_CHANGES_SCHEDULE=off: the poll is not registered at all

    @app.timer_trigger(schedule=_CHANGES_SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
    def clientcert_changes(timer: func.TimerRequest, context: func.Context) -> None:
        """Every few minutes: re-audit the apps and slots whose settings changed (shared.run.changes)."""
        settings = load_settings()
        try:
            result = poll_changes(settings, thread_init=invocation_initializer(context))
        except RunInProgressError as exc:
            logging.info("ClientCertAudit change poll skipped: %s", exc)
            return
        run = result.summary
        logging.info(
            "ClientCertAudit change poll since %s: %d changes to %d resources; %s",
            result.since.isoformat(),
            result.changes,
            result.resources,
            f"run {run.run_id} {run.outcome}, {run.new_failures} new failures" if run else "no run needed",
        )
