"""A small estate audited several times by the real engine, for the report and exemption tests.

Uses the shared fixtures (``azurite``, ``make_arm``) and the real engine end to end: ARM emulator ->
inventory -> evaluation -> Azurite tables. Each test gets its own table names, so tests share one
Azurite without seeing each other's rows. Runs are stamped one hour apart on a fake clock that starts
now, so run ids (which sort by time) never tie and exemptions added "now" are valid for the next run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.azure.identity import build_credential
from shared.azure.store import TableStore
from shared.cli import main
from shared.core.config import load_settings
from shared.core.layout import run_range
from shared.run.audit import AuditRun, RunSummary, build_inventory
from tests.emulators.tenant import Site, Tenant

SUB_A = "aaaaaaaa-1111-4111-8111-111111111111"
SUB_B = "bbbbbbbb-2222-4222-8222-222222222222"


class AuditBed:
    """Tenant + emulators + settings in the environment; :meth:`run` audits, :meth:`cli` runs the command."""

    def __init__(self, azurite: Any, make_arm: Any, monkeypatch: pytest.MonkeyPatch, *, identity: bool = False) -> None:
        self.tenant = Tenant()
        sub_a = self.tenant.add_subscription(SUB_A, "Prod")
        sub_b = self.tenant.add_subscription(SUB_B, "Dev")
        self.sites: dict[str, Site] = {
            "shop": sub_a.add_site("rg-web", "shop", client_cert_enabled=True, client_cert_mode="Optional"),
            "api": sub_a.add_site("rg-web", "api", client_cert_enabled=True, client_cert_mode="Required"),
            "portal": sub_a.add_site(
                "rg-web", "portal", client_cert_enabled=True, client_cert_mode="Required", exclusion_paths="/health"
            ),
            "jobs": sub_a.add_site("rg-func", "jobs", kind="functionapp,linux", client_cert_enabled=False),
            "intranet": sub_b.add_site("rg-dev", "intranet", client_cert_enabled=True, client_cert_mode="Required"),
        }
        self.sites["api/staging"] = self.sites["api"].add_slot(
            "staging", client_cert_enabled=True, client_cert_mode="OptionalInteractiveUser"
        )
        self.arm = make_arm(self.tenant)
        suffix = uuid.uuid4().hex[:8]
        env = {
            **self.arm.env(),
            "AUDIT_RESULTS_TABLE": f"R{suffix}",
            "AUDIT_LATEST_TABLE": f"L{suffix}",
            "AUDIT_RUNS_TABLE": f"Runs{suffix}",
            "AUDIT_EXEMPTIONS_TABLE": f"Ex{suffix}",
            "AUDIT_CONCURRENCY": "2",
        }
        if identity:  # the deployed setup: the identity's token against the service URI
            env["AUDIT_TABLE_SERVICE_URI"] = azurite.table_service_uri
            monkeypatch.delenv("AUDIT_TABLE_CONNECTION_STRING", raising=False)
        else:
            env["AUDIT_TABLE_CONNECTION_STRING"] = azurite.connection_string
            monkeypatch.delenv("AUDIT_TABLE_SERVICE_URI", raising=False)
        for name in ("AUDIT_SUBSCRIPTIONS", "AUDIT_EXEMPTION_REQUEST_TAG", "AZURE_CLIENT_ID"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        self.clock = datetime.now(UTC).replace(microsecond=0)
        self.summaries: list[RunSummary] = []

    def site_id(self, name: str) -> str:
        return self.sites[name].id

    def run(
        self,
        *,
        at: datetime | None = None,
        tags: Mapping[str, Mapping[str, str]] | None = None,
        outcome: str = "complete",
    ) -> RunSummary:
        """One audit by the real engine, stamped one hour after the previous one (or at ``at``).

        ``tags`` (site or ``site/slot`` name -> tags) are set on those resources in the emulated tenant first.
        """
        self.clock = at or self.clock + timedelta(hours=1)
        stamp = self.clock
        for name, values in (tags or {}).items():  # served by the emulated ARM from now on, as in Azure
            self.sites[name].update(tags=dict(values))
        settings = load_settings()
        credential = build_credential(settings.client_id)
        store = TableStore(settings, None if settings.table_connection_string else credential)
        inventory = build_inventory(settings, credential)
        try:
            summary = AuditRun(settings, store, inventory, now=lambda: stamp).execute()
        finally:
            inventory.close()
            store.close()
        self.summaries.append(summary)
        assert summary.outcome == outcome, f"run {summary.run_id} was {summary.outcome}: {summary.error}"
        return summary

    def rows(self, run_id: str | None = None) -> dict[str, dict[str, Any]]:
        """The result rows of one run (default: the last), by lower-cased resource id, read from the table."""
        low, high = run_range(run_id or self.summaries[-1].run_id)
        store = self.store()
        try:
            found = store.results.query_entities(f"PartitionKey ge '{low}' and PartitionKey lt '{high}'")
            return {str(r["ResourceId"]).lower(): dict(r) for r in found}
        finally:
            store.close()

    def store(self) -> TableStore:
        settings = load_settings()
        return TableStore(settings, None if settings.table_connection_string else build_credential())

    @staticmethod
    def cli(capsys: pytest.CaptureFixture[str], args: Sequence[str]) -> tuple[int, str, str]:
        """Run ``clientcert-audit ARGS`` in-process; returns (exit code, stdout, stderr)."""
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err
