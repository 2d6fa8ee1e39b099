"""Events reach Application Insights from every thread the audit starts.

The harness invokes the function as the worker does (the invocation id in a thread-local, set on
the invoking thread only) and models the host, which drops records that carry no running
invocation's id. On a tenant large enough that table batches complete on audit threads, and with
unreadable scopes that warn from those threads, no event and no warning may be dropped.
"""

from __future__ import annotations

import logging

import pytest

from shared.core import layout
from tests.emulators.faults import FaultRule, Status
from tests.emulators.tenant import generate_tenant
from tests.harness import AuditHarness


@pytest.mark.parametrize("source", ["arm", "resourcegraph"])
def test_no_event_or_warning_is_dropped_by_the_host(
    source: str, make_arm, harness_factory, monkeypatch
) -> None:
    # Partitions of 100 rows instead of 1,000: the larger subscriptions get their own state shards,
    # which are stored (and their events logged) on the audit thread that completes them.
    monkeypatch.setattr(layout, "PARTITION_ROWS", 100)
    tenant = generate_tenant(seed=71, subscriptions=6, sites=420, slot_share=0.3)
    arm = make_arm(tenant)
    h: AuditHarness = harness_factory(arm)
    h.apply_env(AUDIT_INVENTORY_SOURCE=source, AUDIT_CONCURRENCY="4")
    h.run_timer()  # baseline
    assert not h.dropped_by_host(), [r.getMessage()[:120] for r in h.dropped_by_host()[:3]]

    # Night 2: a new failure in every subscription, and one unreadable resource group's slots (a
    # warning logged on an audit thread; the Resource Graph path reads slots from its one query).
    flipped = set()
    for sub in tenant.subscriptions:
        for site in [s for s in sub.iter_resources() if s.expected_status != "FAIL"][:3]:
            site.update(client_cert_enabled=True, client_cert_mode="Optional")
            flipped.add(site.key)
    victim = tenant.subscriptions[0]
    group = victim.sites[0].resource_group
    arm.faults.add(
        FaultRule(Status(403), path=rf"/subscriptions/{victim.subscription_id}/resourceGroups/{group}/providers/Microsoft\.Web/sites$")
    )
    blocked = {r.key for r in victim.iter_resources() if r.resource_group == group and r.is_slot}
    h.clear_events()
    h.run_timer()

    dropped = h.dropped_by_host()
    assert not dropped, f"{len(dropped)} records the host would drop, e.g. {dropped[0].getMessage()[:160]!r}"
    sent = {e["ResourceId"].lower() for e in h.new_failure_events()}
    expected = flipped - blocked if source == "arm" else flipped
    assert len(flipped) == 18 and sent == expected, "every new failure's event reached the host"
    threads = {r.threadName for r in h.host.kept if r.getMessage().startswith("ClientCertAudit.NewFailure")}
    assert threads and "MainThread" not in threads, f"events were logged on the audit's own threads: {threads}"
    if source == "arm":
        warned = [r for r in h.host.kept if r.levelno >= logging.WARNING and "cannot read" in r.getMessage()]
        assert warned and all(r.threadName != "MainThread" for r in warned)
    assert len(h.run_summaries()) == 1
