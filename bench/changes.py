"""Benchmark: the change poll (issue 15), from a change in the tenant to its NewFailure event.

The poll runs every ``AUDIT_CHANGES_SCHEDULE`` (default every 10 minutes). Nobody can wait real
minutes, so the schedule's instants are *simulated* and the work is *real*: one tenant change clock
and one audit clock are moved to each poll instant, the changes are made in the emulated tenant at
random instants between polls (their ``resourcechanges`` records carry those instants), and every
poll then runs for real (``shared.run.changes.poll_changes``: Resource Graph, ARM GETs, Azurite writes,
events) while its wall time is measured. The latency of one change is

    (the instant of the poll that first emits its NewFailure - the instant of the change)
    + (the real seconds from that poll's start to the emission of that event)

Resource Graph lists a change only ``--lags`` seconds after it happened (``arm.change_lag_seconds``);
Microsoft documents that change records "should be available in less than five minutes", so the
default runs 0 s (the best case), 30 s, 2 min and 5 min (the documented bound).

A second scenario counts the requests of single polls from the emulator's counters: a poll with no
change, a poll with ``--burst`` (100) changes, and the polls after it while those changes are still
inside the watermark's overlap margin (``AUDIT_CHANGES_OVERLAP_MINUTES``, 30).

The ARM emulator runs in this process (its tenant is changed between polls; every ARM and Resource
Graph answer is delayed ``--latency``, 50 ms, and ARM's read throttling is on); Azurite runs as its
own process, as for the nightly benchmark. ``python -m bench.changes --help`` lists the options.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.core.config import load_settings
from shared.core.events import EVENT_LOGGER_NAME, NEW_FAILURE_EVENT
from shared.run.audit import run_audit
from shared.run.changes import PollResult, poll_changes
from tests.emulators.arm import ArmEmulator, ThrottleModel
from tests.emulators.azurite import Azurite, repo_root
from tests.emulators.tenant import Site, Tenant
from tests.emulators.tls import TlsMaterial, make_tls

#: The default schedule, ``0 */10 * * * *``: a poll every 10 minutes.
INTERVAL = timedelta(minutes=10)
#: Slack the issue allows on top of the poll interval.
TARGET_SLACK = timedelta(minutes=1)
#: The nightly run the polls follow, and the first poll instant (on the schedule's grid).
NIGHT = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
FIRST_POLL = NIGHT + timedelta(hours=1)
REQUIRED = {"client_cert_enabled": True, "client_cert_mode": "Required"}
#: What an owner does to a compliant app: every one of these makes it FAIL (a NewFailure).
BREAKING_CHANGES: tuple[dict[str, Any], ...] = (
    {"client_cert_mode": "Optional"},
    {"client_cert_mode": "OptionalInteractiveUser"},
    {"client_cert_enabled": False},
)
ARM_KINDS = ("subscriptions", "sites_list", "rg_sites_list", "slots_list", "site_get", "other")


# -- the tenant and its clock ------------------------------------------------------------------------
class Clock:
    """The tenant's change clock and the audit's clock: one simulated instant, moved by the bench."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def build_tenant(sites: int, subscriptions: int, slot_share: float, seed: int) -> tuple[Tenant, list[Site]]:
    """A tenant where every site and slot passes (so each breaking change is exactly one
    NewFailure): ``sites`` sites over ``subscriptions`` subscriptions, 8 to a resource group,
    ``slot_share`` slots per site. Sites carry an owner tag and slots none, as is common, so a
    changed slot costs one more GET (its site, for the owner)."""
    rng = random.Random(seed)
    tenant = Tenant()
    subs = [tenant.add_subscription(str(uuid.UUID(int=rng.getrandbits(128), version=4))) for _ in range(subscriptions)]
    resources: list[Site] = []
    for i in range(sites):
        sub = subs[i % subscriptions]
        site = sub.add_site(
            f"rg-{i // 8:04d}", f"app-{i:05d}", tags={"owner": f"team-{i % 17}@example.com"}, **REQUIRED
        )
        resources.append(site)
    for j in range(round(sites * slot_share)):
        parent = resources[rng.randrange(sites)]
        resources.append(parent.add_slot(f"slot-{j:05d}", **REQUIRED))
    return tenant, resources


# -- instruments -------------------------------------------------------------------------------------
class NewFailureTimes(logging.Handler):
    """Records when each NewFailure event is emitted (monotonic seconds), by lower-cased resource id."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, float]] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        at = time.monotonic()
        message = record.getMessage()
        if not message.startswith(NEW_FAILURE_EVENT + " "):
            return
        resource_id = str(json.loads(message[len(NEW_FAILURE_EVENT) + 1 :]).get("ResourceId", "")).lower()
        with self._guard:
            self.seen.append((resource_id, at))

    def take(self) -> list[tuple[str, float]]:
        with self._guard:
            out, self.seen = self.seen, []
        return out


class HttpCounter:
    """Counts the product's HTTP requests by destination port (the SDKs send through ``requests``):
    here, only to tell how many Table requests a poll costs; ARM and Resource Graph are counted by
    the emulator itself."""

    def __init__(self) -> None:
        self.by_port: Counter[int] = Counter()
        self._guard = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[HttpCounter]:
        from requests.adapters import HTTPAdapter

        original = HTTPAdapter.send
        counter = self

        def send(adapter: HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
            port = urlsplit(str(request.url)).port or 443
            with counter._guard:
                counter.by_port[port] += 1
            return original(adapter, request, *args, **kwargs)

        HTTPAdapter.send = send  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            HTTPAdapter.send = original  # type: ignore[method-assign]

    def count(self, port: int) -> int:
        with self._guard:
            return self.by_port[port]


# -- one deployment ----------------------------------------------------------------------------------
@dataclass
class Deployment:
    """The function's settings on a shared Azurite and a fresh emulator with a fresh tenant."""

    args: argparse.Namespace
    tls: TlsMaterial
    azurite: Azurite
    http: HttpCounter
    failures: NewFailureTimes
    clock: Clock = field(default_factory=lambda: Clock(NIGHT))
    resources: list[Site] = field(default_factory=list)

    def __post_init__(self) -> None:
        tenant, self.resources = build_tenant(
            self.args.sites, self.args.subscriptions, self.args.slot_share, self.args.seed
        )
        tenant.start_change_log(self.clock)  # the tenant's build is not a change
        self.tenant = tenant
        throttle = ThrottleModel(capacity=250, refill_per_second=25) if not self.args.no_throttle else False
        self.arm = ArmEmulator(tenant, self.tls, latency=self.args.latency, throttle=throttle, request_log_size=16)
        self.arm.start()
        suffix = uuid.uuid4().hex[:8]
        self.env = {
            **self.arm.env(),
            "AUDIT_TABLE_SERVICE_URI": self.azurite.table_service_uri,
            "AUDIT_SCHEDULE": "0 0 2 * * *",
            "AUDIT_CHANGES_SCHEDULE": "0 */10 * * * *",
            "AUDIT_RESULTS_TABLE": f"ChgResults{suffix}",
            "AUDIT_LATEST_TABLE": f"ChgLatest{suffix}",
            "AUDIT_RUNS_TABLE": f"ChgRuns{suffix}",
            "AUDIT_EXEMPTIONS_TABLE": f"ChgExempt{suffix}",
            "AUDIT_CONCURRENCY": str(self.args.concurrency),
            "AUDIT_CHANGES_OVERLAP_MINUTES": str(self.args.overlap_minutes),
        }

    def close(self) -> None:
        self.arm.stop()

    @contextmanager
    def environment(self) -> Iterator[None]:
        """The function app's settings in this process's environment (``load_settings`` reads them)."""
        saved = {k: v for k, v in os.environ.items() if k.startswith("AUDIT_") or k == "AZURE_CLIENT_ID"}
        for key in saved:
            del os.environ[key]
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key in self.env:
                os.environ.pop(key, None)
            os.environ.update(saved)

    def nightly(self) -> None:
        """The nightly baseline the polls build on (a poll before any nightly run does nothing)."""
        self.clock.at = NIGHT
        with self.environment():
            summary = run_audit(load_settings(), now=self.clock)
        if summary.outcome != "complete" or summary.new_failures:
            raise RuntimeError(f"the nightly baseline was {summary.outcome} with {summary.new_failures} failures")
        self.failures.take()

    def poll(self, at: datetime) -> dict[str, Any]:
        """One poll at the simulated instant ``at``, timed for real, with its request counts."""
        self.clock.at = at
        self.arm.refill_quotas()  # ten minutes have passed: every read budget is full again
        self.failures.take()
        before, http_before = self.arm.stats(), self.http.count(self.azurite.port)
        with self.environment():
            settings = load_settings()
            started = time.monotonic()
            result: PollResult = poll_changes(settings, now=self.clock)
            wall = time.monotonic() - started
        after, http_after = self.arm.stats(), self.http.count(self.azurite.port)
        kinds = {k: after["by_kind"][k] - before["by_kind"][k] for k in (*ARM_KINDS, "resourcegraph", "token")}
        summary = result.summary
        return {
            "at": at.isoformat(),
            "wall_seconds": round(wall, 3),
            "started_monotonic": started,
            "changes": result.changes,
            "resources": result.resources,
            "outcome": summary.outcome if summary else None,
            "new_failures": summary.new_failures if summary else 0,
            "resource_graph_requests": kinds["resourcegraph"],
            "arm_requests": sum(kinds[k] for k in ARM_KINDS),
            "arm_requests_by_kind": {k: kinds[k] for k in ARM_KINDS if kinds[k]},
            "token_requests": kinds["token"],
            "table_requests": http_after - http_before,
            "http_429": after["throttled"] - before["throttled"],
            # every change it listed was handled (none left for the next poll): the watermark moved
            # to the latest change time listed, in Resource Graph's clock (or stayed: nothing listed)
            "watermark_advanced": result.left == 0,
            "events": self.failures.take(),
        }


# -- scenario 1: latency -----------------------------------------------------------------------------
def change_plan(
    resources: list[Site], changes: int, intervals: int, seed: int
) -> list[tuple[datetime, Site, dict[str, Any]]]:
    """``changes`` breaking changes to distinct resources at random instants (uniform, to the
    microsecond) over ``intervals`` poll intervals after the first poll, in time order."""
    if changes > len(resources):
        raise ValueError(f"{changes} changes need as many resources; the tenant has {len(resources)}")
    rng = random.Random(seed + 1)
    span = intervals * INTERVAL.total_seconds()
    targets = rng.sample(resources, changes)
    plan = [
        (FIRST_POLL + timedelta(microseconds=rng.randrange(1, int(span * 1e6))), site, rng.choice(BREAKING_CHANGES))
        for site in targets
    ]
    return sorted(plan, key=lambda item: item[0])


def measure_latency(lag: float, args: argparse.Namespace, make: Callable[[], Deployment]) -> dict[str, Any]:
    """Polls on the schedule's grid with changes in between, until every change has alerted."""
    deployment = make()
    try:
        deployment.arm.change_lag_seconds = lag
        deployment.nightly()
        plan = change_plan(deployment.resources, args.changes, args.intervals, args.seed)
        changed_at = {site.key: at for at, site, _ in plan}
        alerted: dict[str, dict[str, Any]] = {}
        duplicates = 0
        polls: list[dict[str, Any]] = []
        pending = list(plan)
        last_poll = args.intervals + math.ceil(lag / INTERVAL.total_seconds()) + 1
        for k in range(0, last_poll + 1):
            at = FIRST_POLL + k * INTERVAL
            while pending and pending[0][0] < at:
                when, site, settings = pending.pop(0)
                deployment.clock.at = when
                site.update(**settings)
            poll = deployment.poll(at)
            for resource_id, emitted in poll.pop("events"):
                if resource_id in alerted or resource_id not in changed_at:
                    duplicates += 1
                    continue
                processing = emitted - poll["started_monotonic"]
                waited = (at - changed_at[resource_id]).total_seconds()
                alerted[resource_id] = {
                    "waited_for_poll_seconds": round(waited, 3),
                    "processing_seconds": round(processing, 3),
                    "latency_seconds": round(waited + processing, 3),
                }
            del poll["started_monotonic"]
            poll["changes_made_since_previous_poll"] = (
                sum(1 for when, _, _ in plan if at - INTERVAL <= when < at) if k else 0
            )
            polls.append(poll)
            if k >= args.intervals and len(alerted) == len(plan):
                break
        return _latency_figures(lag, plan, alerted, duplicates, polls)
    finally:
        deployment.close()


def _latency_figures(
    lag: float,
    plan: list[tuple[datetime, Site, dict[str, Any]]],
    alerted: dict[str, dict[str, Any]],
    duplicates: int,
    polls: list[dict[str, Any]],
) -> dict[str, Any]:
    latencies = sorted(a["latency_seconds"] for a in alerted.values())
    processing = sorted(a["processing_seconds"] for a in alerted.values())
    limit = (INTERVAL + TARGET_SLACK).total_seconds()
    measured = polls[1:]  # the first poll has no watermark yet and sees no change
    worst = latencies[-1] if latencies else None
    return {
        "lag_seconds": lag,
        "changes": len(plan),
        "alerted": len(alerted),
        "missed": len(plan) - len(alerted),
        "duplicate_alerts": duplicates,
        "polls": len(polls),
        "latency_seconds": {
            "median": round(statistics.median(latencies), 1) if latencies else None,
            "p95": round(_percentile(latencies, 0.95), 1) if latencies else None,
            "worst": round(worst, 1) if worst is not None else None,
            "best": round(latencies[0], 1) if latencies else None,
        },
        "processing_to_event_seconds": {
            "median": round(statistics.median(processing), 3) if processing else None,
            "worst": round(processing[-1], 3) if processing else None,
        },
        "poll_wall_seconds": {
            "median": round(statistics.median(p["wall_seconds"] for p in measured), 3) if measured else None,
            "worst": round(max(p["wall_seconds"] for p in measured), 3) if measured else None,
        },
        "arm_requests_per_poll_median": statistics.median(p["arm_requests"] for p in measured) if measured else None,
        "arm_gets_per_change": round(sum(p["arm_requests"] for p in polls) / len(plan), 2) if plan else None,
        "target": {
            "limit_seconds": limit,
            "met": worst is not None and worst <= limit and len(alerted) == len(plan),
        },
        "per_poll": polls,
    }


def _percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    return values[max(0, math.ceil(share * len(values)) - 1)]


# -- scenario 2: requests per poll -------------------------------------------------------------------
def measure_requests(args: argparse.Namespace, make: Callable[[], Deployment]) -> dict[str, Any]:
    """Single polls: the first after the night, one with no change, one after ``--burst`` changes,
    then each next poll (no new change) until the burst has left the overlap margin."""
    deployment = make()
    try:
        deployment.nightly()
        steps: list[dict[str, Any]] = []

        def step(label: str, at: datetime) -> dict[str, Any]:
            poll = deployment.poll(at)
            poll.pop("started_monotonic")
            poll["alerts"] = len(poll.pop("events"))
            poll["step"] = label
            steps.append(poll)
            return poll

        step("first poll after the nightly run (no watermark yet), no change", FIRST_POLL)
        step("no change", FIRST_POLL + INTERVAL)
        rng = random.Random(args.seed + 2)
        window = FIRST_POLL + INTERVAL
        burst = rng.sample(deployment.resources, args.burst)
        for site in burst:
            deployment.clock.at = window + timedelta(microseconds=rng.randrange(1, int(INTERVAL.total_seconds() * 1e6)))
            site.update(**rng.choice(BREAKING_CHANGES))
        step(f"{args.burst} changes", window + INTERVAL)
        extra = math.ceil(args.overlap_minutes / (INTERVAL.total_seconds() / 60))
        for k in range(1, extra + 1):
            step(
                f"no new change, {args.burst} changes {k * 10} min back (inside the overlap)",
                window + (k + 1) * INTERVAL,
            )
        step("no change (the burst has left the overlap)", window + (extra + 2) * INTERVAL)
        return {
            "burst": args.burst,
            "slots_in_burst": sum(1 for site in burst if site.is_slot),
            "steps": steps,
            "no_change": steps[1],
            "with_burst": steps[2],
        }
    finally:
        deployment.close()


# -- report ------------------------------------------------------------------------------------------
def print_report(figures: dict[str, Any]) -> None:
    s = figures["settings"]
    print()
    print(
        f"Tenant: {s['sites']} sites + {s['slots']} slots in {s['subscriptions']} subscriptions; "
        f"{s['latency_ms']} ms per ARM / Resource Graph answer; schedule every {s['interval_minutes']} min, "
        f"overlap {s['overlap_minutes']} min; {s['changes']} changes at random instants over {s['intervals']} intervals"
    )
    print()
    print("Latency from a change to its NewFailure event (s):")
    header = (
        "Resource Graph lag",
        "changes",
        "alerted",
        "dup",
        "median",
        "p95",
        "worst",
        "poll wall med/worst",
        "target",
    )
    rows: list[tuple[str, ...]] = [header]
    for run in figures["latency"]:
        lat, wall = run["latency_seconds"], run["poll_wall_seconds"]
        target = run["target"]
        rows.append(
            (
                f"{run['lag_seconds']:g} s",
                str(run["changes"]),
                str(run["alerted"]),
                str(run["duplicate_alerts"]),
                str(lat["median"]),
                str(lat["p95"]),
                str(lat["worst"]),
                f"{wall['median']} / {wall['worst']}",
                f"{'met' if target['met'] else 'NOT met'} (<= {target['limit_seconds']:g})",
            )
        )
    _table(rows)
    print()
    print("Requests per poll (ARM = management calls excluding Resource Graph; tokens are the MI endpoint):")
    rows = [("poll", "Resource Graph", "ARM", "ARM by kind", "tokens", "Table requests", "wall (s)", "alerts")]
    for step in figures["requests"]["steps"]:
        rows.append(
            (
                step["step"],
                str(step["resource_graph_requests"]),
                str(step["arm_requests"]),
                ", ".join(f"{k} {v}" for k, v in step["arm_requests_by_kind"].items()) or "-",
                str(step["token_requests"]),
                str(step["table_requests"]),
                str(step["wall_seconds"]),
                str(step["alerts"]),
            )
        )
    _table(rows)
    print()
    print("Targets:")
    for name, target in figures["targets"].items():
        print(f"  {name}: {'met' if target['met'] else 'NOT met'} ({target['detail']})")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  " + "  ".join("-" * width for width in widths))


def evaluate_targets(figures: dict[str, Any]) -> dict[str, Any]:
    limit = (INTERVAL + TARGET_SLACK).total_seconds()
    targets: dict[str, Any] = {}
    for run in figures["latency"]:
        worst = run["latency_seconds"]["worst"]
        targets[f"latency_le_interval_plus_1min_at_lag_{run['lag_seconds']:g}s"] = {
            "met": run["target"]["met"],
            "detail": f"worst {worst} s, median {run['latency_seconds']['median']} s, limit {limit:g} s; "
            f"{run['missed']} missed, {run['duplicate_alerts']} alerted twice",
        }
    quiet = figures["requests"]["no_change"]
    targets["no_change_poll_costs_one_resource_graph_request"] = {
        "met": quiet["resource_graph_requests"] == 1 and quiet["arm_requests"] == 0,
        "detail": f"{quiet['resource_graph_requests']} Resource Graph, {quiet['arm_requests']} ARM requests",
    }
    return targets


# -- main --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.changes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=1000, help="production sites (default 1000)")
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--slot-share", type=float, default=0.3, help="slots per site (default 0.3)")
    parser.add_argument("--changes", type=int, default=240, help="changes per lag (default 240)")
    parser.add_argument("--intervals", type=int, default=12, help="poll intervals the changes spread over")
    parser.add_argument("--lags", default="0,30,120,300", help="Resource Graph lags to run, in seconds")
    parser.add_argument("--burst", type=int, default=100, help="changes in the requests scenario (default 100)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every ARM answer")
    parser.add_argument("--concurrency", type=int, default=8, help="AUDIT_CONCURRENCY")
    parser.add_argument("--no-throttle", action="store_true", help="turn ARM's throttling model off")
    parser.add_argument("--overlap-minutes", type=int, default=30, help="AUDIT_CHANGES_OVERLAP_MINUTES")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="default bench/results-changes.json")
    parser.add_argument("--workdir", type=Path, default=None, help="TLS and Azurite data (default: a temp dir)")
    args = parser.parse_args(argv)
    lags = [float(x) for x in args.lags.split(",") if x.strip()]
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="clientcert-bench-changes-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tls = make_tls(workdir / "tls")
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    events = logging.getLogger(EVENT_LOGGER_NAME)
    failures, http = NewFailureTimes(), HttpCounter()
    events.addHandler(failures)
    level = events.level
    events.setLevel(logging.INFO)
    events.propagate = False  # one WARNING per alert is the product's; here they are only timed
    figures: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {
            "sites": args.sites,
            "slots": round(args.sites * args.slot_share),
            "subscriptions": args.subscriptions,
            "latency_ms": round(args.latency * 1000),
            "throttle": "off" if args.no_throttle else "250 reads/subscription/principal, refill 25/s",
            "interval_minutes": INTERVAL.total_seconds() / 60,
            "overlap_minutes": args.overlap_minutes,
            "changes": args.changes,
            "intervals": args.intervals,
            "lags_seconds": lags,
            "seed": args.seed,
        },
        "latency": [],
    }
    try:
        with Azurite(workdir / "azurite", tls) as azurite, http.installed():

            def make() -> Deployment:
                return Deployment(args, tls, azurite, http, failures)

            for lag in lags:
                print(f"Latency with a Resource Graph lag of {lag:g} s: {args.changes} changes ...", flush=True)
                figures["latency"].append(measure_latency(lag, args, make))
            print(f"Requests per poll: no change, then {args.burst} changes ...", flush=True)
            figures["requests"] = measure_requests(args, make)
    finally:
        events.removeHandler(failures)
        events.propagate = True
        events.setLevel(level)
    figures["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    figures["targets"] = evaluate_targets(figures)
    print_report(figures)
    out = args.json or repo_root() / "bench" / "results-changes.json"
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    print(f"\nFigures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
