"""Bytes the audit holds per listed resource: the ``r`` of the memory bound (bench/README.md).

``python -m bench.held`` lists one subscription of full-shape sites (the emulator's ``site_json``)
into what the pipeline keeps by key while a subscription waits for its state to be stored (its
compact record and its key; the inventory keeps nothing per resource), then its prior-state row as the next night reads
it (``shared.azure.store._state_model_row``), then what its plan adds once its rows are queued
(transitions, state partitions) with its state rows waiting in partial batches as the writer keeps
them (``DeferredRow``), and prints the traced bytes per resource of each: a resource costs the first
figure while it is listed, the first two once its state is read, all three while its rows wait.
"""

from __future__ import annotations

import json
import sys
import tracemalloc
from datetime import UTC, datetime
from typing import Any

from shared.azure import store
from shared.azure.sites import site_record
from shared.core.keys import resource_key
from shared.core.models import SiteRecord
from shared.core.plan import Findings, plan_subscription
from shared.core.summary import RunSummary
from tests.emulators.tenant import generate_tenant
from tests.emulators.web import site_json


def per_resource(sites: int = 10_000) -> dict[str, int]:
    tenant = generate_tenant(1, subscriptions=1, sites=sites, slot_share=0.3)
    sub = tenant.subscriptions[0]
    pages = [json.dumps(site_json(s, "site")) for s in sub.sites]
    pages += [json.dumps(site_json(slot, "slot")) for s in sub.sites for slot in getattr(s, "slots", [])]
    n = len(pages)
    tracemalloc.start()
    listed: dict[str, Any] = {}
    for text in pages:
        record = site_record(json.loads(text), sub.subscription_id)
        assert isinstance(record, SiteRecord)
        listed[resource_key(record.resource_id)] = record
    first, _ = tracemalloc.get_traced_memory()
    prior = {}
    for i, key in enumerate(listed):
        raw = {
            **{"PartitionKey": "bucket-a", "RowKey": key, "Status": "PASS", "PreviousStatus": "PASS"},
            **{"LastRunId": "20261205T202714219830Z-7b0de3", "Gone": False, "AlertPending": False, "Fence": 3},
            "odata.etag": f"W/\"datetime'2026-12-05T20%3A29%3A{i % 60:02d}.{i:07d}Z'\"",
        }
        prior[key] = store._state_model_row(json.loads(json.dumps(raw)), key)
    both, _ = tracemalloc.get_traced_memory()
    now = datetime(2026, 12, 6, 20, 27, tzinfo=UTC)
    summary = RunSummary("20261206T202714219830Z-7b0de3", now, fence=4)
    findings = Findings(listed, (), now)
    plan = plan_subscription(
        sub.subscription_id, findings, prior, [], summary=summary, audited_at=now, read=True, partial=False
    )
    waiting = [(sub.subscription_id, row) for row in plan.state_rows()]  # the writer's partial batches
    queued, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(waiting) == n
    return {
        "resources": n,
        "json_bytes_per_resource": sum(map(len, pages)) // n,
        "listed_bytes_per_resource": first // n,
        "prior_state_bytes_per_resource": (both - first) // n,
        "queued_bytes_per_resource": (queued - both) // n,
    }


def main() -> int:
    print(json.dumps(per_resource(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
