"""The audit run: inventory → evaluate → store → alert, for every subscription the identity can read.

This module only orchestrates. The run ledger (``ledger.py``) takes the lease, begins or resumes
the run, records it and closes it; the subscription pipeline (``pipeline.py``) audits each
subscription and stores its result rows, then its state, then its alerts. A crash at any point
leaves a state that a later run completes without flagging anything twice or losing a row.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import datetime

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError

from ..azure.exemptions import load_exemptions
from ..azure.identity import build_credential
from ..azure.inventory import ArmInventory
from ..azure.store import TableStore
from ..azure.threads import NO_CONTEXT, ThreadInit
from ..core.clock import Clock, host_clock
from ..core.config import Settings
from ..core.errors import AuditFailed, one_line
from ..core.models import InventoryError
from ..core.names import fold
from ..core.plan import tally
from ..core.roles import AUDIT_READER_ROLE
from ..core.schema import refused_result_row
from .ledger import RunLedger, RunSummary, registry_memo, vanished_subscriptions
from .pipeline import Checkpoint, Inventory, RunContext, SubscriptionPipeline, audit_all

log = logging.getLogger(__name__)

__all__ = ["AuditRun", "Inventory", "RunSummary", "build_inventory", "run_audit"]


class AuditRun:
    """One run of the audit. Construct, then :meth:`execute`."""

    def __init__(
        self,
        settings: Settings,
        store: TableStore,
        inventory: Inventory,
        *,
        now: Callable[[], datetime] | None = None,
        clock: Clock | None = None,
        checkpoint: Checkpoint | None = None,
        thread_init: ThreadInit = NO_CONTEXT,
    ) -> None:
        self.settings = settings
        self.store = store
        self.inventory = inventory
        self.clock = host_clock(now, clock)
        self.now = self.clock.now
        self.checkpoint: Checkpoint = checkpoint or (lambda stage, sub: None)
        self.thread_init = thread_init
        store.fallbacks[store.results.table_name] = refused_result_row
        self.ledger = RunLedger(settings, store, self.clock, thread_init)

    def execute(self) -> RunSummary:
        started = self.now()
        deadline = self.clock.monotonic() + self.settings.run_deadline_minutes * 60
        summary, _ = self.ledger.run(started, lambda summary: self._run(summary, deadline), what="audit run")
        return summary

    def _run(self, summary: RunSummary, deadline: float) -> None:
        try:
            exemptions = load_exemptions(self.store)
            subscriptions = self.inventory.subscriptions()
        except AzureError as exc:
            raise AuditFailed(f"cannot list subscriptions: {one_line(exc)}") from exc
        log.info("Run %s: auditing %d subscriptions", summary.run_id, len(subscriptions))
        if summary.resumed:  # the interrupted attempt's rows of no subscription (the tenant's): written again
            # below; its rows in each subscription are kept or deleted with the subscription (pipeline.py)
            deleted = self.store.delete_run_results(summary.run_id, outside_subscriptions=True)
            log.info("Run %s: removed %d rows of the interrupted attempt", summary.run_id, deleted)
        names = {fold(s.subscription_id): s.display_name for s in subscriptions}
        known = self.store.known_subscriptions()
        vanished = vanished_subscriptions(
            self.settings, known, [s.subscription_id for s in subscriptions], summary.started_at
        )
        known = registry_memo(known)  # what the end of the run needs; the vanished keep their rows
        for sub_id, row in vanished.items():
            names.setdefault(fold(sub_id), str(row.get("SubscriptionName") or ""))
        ids = [s.subscription_id for s in subscriptions] + list(vanished)
        # Kept for the run's length, one entry per subscription: its tenant (one string for all), not its record.
        tenants = {fold(s.subscription_id): sys.intern(s.tenant_id) for s in subscriptions if s.tenant_id}
        del subscriptions
        context = RunContext(summary, exemptions, names, vanished, deadline)
        pipeline = SubscriptionPipeline(
            self.settings,
            self.store,
            self.inventory,
            context,
            now=self.now,
            monotonic=self.clock.monotonic,
            checkpoint=self.checkpoint,
            thread_init=self.thread_init,
        )
        try:
            totals = audit_all(pipeline, ids)
            blind = None if totals.read else pipeline.scope_error("tenant", nothing_read(totals.audited))
            pipeline.drain()
        finally:
            pipeline.close()
        read = {sub_id: names.get(fold(sub_id), "") for sub_id in totals.read}
        self.ledger.remember(summary, read, known, tenants)  # bookkeeping, like the run record: not in Transactions
        summary.transactions = pipeline.transactions
        summary.partitions = pipeline.partitions
        tally(summary, totals)
        if blind is not None:  # the tenant's ERROR row counts as a row, not as a subscription
            summary.blind = summary.partial = True
            summary.counts.update(blind.counts)
            summary.rows += blind.rows


def nothing_read(audited: int) -> InventoryError:
    """The tenant's ERROR row of a run that read no subscription: why, and which role to grant where.

    A run that saw nothing is never a pass (its outcome is ``blind``): every new deployment starts
    here, before the tenant role is granted, and a run after the role is removed looks the same."""
    if audited:
        what = (
            f"No subscription could be read: all {audited} were unreadable (each has its ERROR row), no state "
            "moved, and this run is not a pass."
        )
    else:
        what = (
            "The audit identity can read no subscription (the subscription list it sees is empty): nothing was "
            "audited, and this run is not a pass."
        )
    grant = (
        f"Grant it the custom role '{AUDIT_READER_ROLE}' (infra/tenant/audit-reader-role.bicep) at the tenant root "
        "management group (its id is the tenant id), or at the management group that holds the subscriptions to "
        "audit; see docs/deploy.md. The next run audits them."
    )
    return InventoryError("/", "", f"{what} {grant}")


def build_inventory(settings: Settings, credential: TokenCredential, thread_init: ThreadInit = NO_CONTEXT) -> Inventory:
    """The configured inventory source; its threads run ``thread_init`` first."""
    if settings.inventory_source.value == "resourcegraph":
        from ..azure.resourcegraph import ResourceGraphInventory

        return ResourceGraphInventory(credential, settings, thread_init)
    return ArmInventory(credential, settings, thread_init)


def run_audit(
    settings: Settings,
    *,
    credential: TokenCredential | None = None,
    checkpoint: Checkpoint | None = None,
    thread_init: ThreadInit = NO_CONTEXT,
    now: Callable[[], datetime] | None = None,
    clock: Clock | None = None,
) -> RunSummary:
    """Run the audit once with the configured identity, store and inventory. ``thread_init`` runs
    first on every thread the run starts (the Functions invocation context, see ``threads``);
    ``clock`` is the host's clocks, or ``now`` its wall clock alone (tests move them across nights)."""
    credential = credential or build_credential(settings.client_id)
    store = TableStore(settings, None if settings.table_connection_string else credential)
    try:
        inventory = build_inventory(settings, credential, thread_init)
        try:
            return AuditRun(
                settings,
                store,
                inventory,
                clock=host_clock(now, clock),
                checkpoint=checkpoint,
                thread_init=thread_init,
            ).execute()
        finally:
            inventory.close()
    finally:
        store.close()
