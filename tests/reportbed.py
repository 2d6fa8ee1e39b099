"""A small estate audited several times by the real engine, for the report and exemption tests.

Uses the shared fixtures (``azurite``, ``make_arm``) and the real engine end to end: ARM emulator ->
inventory -> evaluation -> Azurite tables. Each test gets its own table names, so tests share one
Azurite without seeing each other's rows. Runs are stamped one hour apart on a fake clock that starts
now, so run ids (which sort by time) never tie and exemptions added "now" are valid for the next run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.audit import AuditRun, RunSummary, build_inventory
from shared.cli import main
from shared.config import load_settings
from shared.identity import build_credential
from shared.models import InventoryError, SiteRecord
from shared.store import TableStore
from tests.emulators.tenant import Site, Tenant

SUB_A = "aaaaaaaa-1111-4111-8111-111111111111"
SUB_B = "bbbbbbbb-2222-4222-8222-222222222222"


class _Tagged:
    """The real inventory, with tags added to the sites named (as ARM would list them)."""

    def __init__(self, inner: Any, tags: Mapping[str, Mapping[str, str]]) -> None:
        self.inner, self.tags = inner, tags

    def subscriptions(self) -> Any:
        return self.inner.subscriptions()

    def close(self) -> None:
        self.inner.close()

    def scan(self, subscription_id: str) -> Iterator[SiteRecord | InventoryError]:
        for item in self.inner.scan(subscription_id):
            extra = self.tags.get(item.resource_id.lower()) if isinstance(item, SiteRecord) else None
            yield replace(item, tags=tuple(sorted(extra.items()))) if extra and isinstance(item, SiteRecord) else item


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

    def run(self, *, at: datetime | None = None, tags: Mapping[str, Mapping[str, str]] | None = None) -> RunSummary:
        """One audit by the real engine, stamped one hour after the previous one (or at ``at``).

        ``tags`` (site name -> tags) decorates what ARM listed, since the emulator serves no tags.
        """
        self.clock = at or self.clock + timedelta(hours=1)
        stamp = self.clock
        settings = load_settings()
        credential = build_credential(settings.client_id)
        store = TableStore(settings, None if settings.table_connection_string else credential)
        inventory: Any = build_inventory(settings, credential)
        if tags:
            inventory = _Tagged(inventory, {self.site_id(k).lower(): v for k, v in tags.items()})
        try:
            summary = AuditRun(settings, store, inventory, now=lambda: stamp).execute()
        finally:
            store.close()
        self.summaries.append(summary)
        assert summary.outcome == "complete", f"run {summary.run_id} was {summary.outcome}: {summary.error}"
        return summary

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
