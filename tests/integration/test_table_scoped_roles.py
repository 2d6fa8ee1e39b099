"""The app runs with table-scoped roles (infra/app/rbac.bicep): write on the three tables it writes,
read only on the exemptions table. Such roles do not allow creating a table, so every "create the
table if missing" request is refused with 403; the tables exist (the template creates them) and
the run must go on as usual, while a table that cannot be *read or written* still fails loudly.
"""

from __future__ import annotations

from tests.emulators.faults import FaultRule, Status
from tests.emulators.proxy import FaultProxy
from tests.emulators.tenant import Tenant
from tests.harness import AuditHarness

SUB = "7ab1e5c0-0000-4000-8000-000000000001"
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}


def test_a_refused_table_creation_does_not_stop_the_run(make_arm, harness_factory, azurite, tls) -> None:
    tenant = Tenant()
    sub = tenant.add_subscription(SUB, display_name="prod")
    apps = [sub.add_site("rg-a", f"app-{i}", **REQ) for i in range(3)]
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_timer()  # creates the tables, as the template does in Azure
    with FaultProxy(azurite.port, tls) as proxy:
        proxy.faults.add(FaultRule(Status(403, code="AuthorizationPermissionMismatch"), path=r"/Tables$", method="POST"))
        h.apply_env(AUDIT_TABLE_SERVICE_URI=proxy.url())
        apps[0].update(client_cert_mode="Optional")
        h.run_timer()
        refused = [r for r in proxy.requests if r[0] == "POST" and r[1].endswith("/Tables")]
    assert len(refused) == 4 and all(status == 403 for *_, status in refused), refused
    run = h.runs()[-1]
    assert run["Outcome"] == "complete", run
    assert h.rows_by_id(run["RunId"])[apps[0].key]["Status"] == "FAIL"


def test_a_table_that_cannot_be_written_still_fails_the_run(make_arm, harness_factory, azurite, tls) -> None:
    tenant = Tenant()
    tenant.add_subscription(SUB, display_name="prod").add_site("rg-a", "app", **REQ)
    h: AuditHarness = harness_factory(make_arm(tenant))
    h.run_timer()
    runs_before = len(h.runs())
    with FaultProxy(azurite.port, tls) as proxy:
        forbidden = Status(403, code="AuthorizationPermissionMismatch")
        proxy.faults.add(FaultRule(forbidden, path=r"/Tables$", method="POST"))
        proxy.faults.add(FaultRule(forbidden, path=r".*", method="*"))
        h.apply_env(AUDIT_TABLE_SERVICE_URI=proxy.url())
        failed = None
        try:
            h.run_timer()
        except Exception as exc:  # the timer function raises: the host records a failed invocation
            failed = exc
    assert failed is not None, "a run that can write nothing must fail loudly"
    assert len(h.runs()) == runs_before
