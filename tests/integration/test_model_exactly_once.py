"""Exactly once, explored: a model-based test of the nightly run, the change poll, their crashes,
resumes, the lease across hosts with their own clocks, and what ARM and Resource Graph answer.

A Hypothesis ``RuleBasedStateMachine`` drives the real engine (``run_audit`` and ``poll_changes``,
invoked as the Functions worker invokes the timers) against the ARM emulator and Azurite, with
random interleavings of: nightly runs and polls on two hosts whose clocks are skewed; crashes at
each step (an exception, or a kill that leaves the lease held and the run record ``running``) and
the resumes after them; a holder frozen between its lease check and its writes while another host
takes over; change records that are late, duplicated or re-cased; Resource Graph's index lagging
(with Resource Graph as the inventory); exemptions added and expiring; resources failing,
recovering, deleted and re-created; the subscription becoming unreadable for a run; a poll's GET
failing transiently. A second rule breaks an app and kills (or fails) the run that finds it at its
alert step, the window among them: a random step rarely lines a crash up with a new failure. The table service's clock is the model's: every host talks to Azurite
through its own fault proxy, whose ``Date`` the model moves (the lease is judged by it).

The oracle is the model's, independent of the engine's state logic. The model knows the truth
(each resource's configuration, existence and exemptions, and every host's clock) and where each
run stopped. Every row a run stores must state the truth of its resource at that run (with
Resource Graph, possibly the truth of when its index froze), so the rows of the runs whose state
advanced are the observations the engine made; from them the oracle cuts each resource's failure
*episodes* (failing observations between two that were not) and requires:

* at most one NewFailure event per episode, and none for an episode the baseline began;
* at least one for every episode observed by a run that finished its alert step, unless a run
  died in the one accepted window (after storing a mark, before logging its event);
* for every event, the row of its ``RunId`` shows ``NewFailure`` and the event's ``FirstFailedAt``;
* every complete nightly run has one row per resource that exists (or its subscription's ERROR row).

CI runs a fixed, derandomized profile (8 examples of up to 12 steps: about two minutes on the
2-core machine, more when other suites share it), without shrinking; ``AUDIT_MODEL_PROFILE=long``
runs a long, randomized one that shrinks what it finds; ``AUDIT_MODEL_EXAMPLES=N`` sets the number
of examples, ``AUDIT_MODEL_SHRINK=1`` minimises a failure of the CI profile (docs/design.md,
"Exactly once"). ``pytest -s`` prints what the examples did. Every counterexample found so far is
kept as an explicit test at the end of this module.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from shared.azure.exemptions import new_exemption
from shared.azure.threads import invocation_initializer
from shared.core.clock import Clock
from shared.core.config import load_settings
from shared.core.errors import RunInProgressError
from shared.core.events import RUN_SUMMARY_EVENT
from shared.core.names import fold
from shared.core.schema import exemption_row
from shared.run.audit import run_audit
from shared.run.changes import poll_changes
from tests.emulators.faults import FaultRule, Status
from tests.emulators.proxy import FaultProxy
from tests.emulators.tenant import ResourceChange, Site, Tenant
from tests.harness import AuditHarness, event_payloads

SUB = "5e5e5e5e-0000-4000-8000-000000000019"
T0 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
REQ = {"client_cert_enabled": True, "client_cert_mode": "Required"}
HOSTS = ("a", "b")
#: Where a run can stop: after its rows, after its state, after a mark (the accepted window: the
#: events of that batch are lost), after its events.
STAGES = ("rows_written", "state_advanced", "marked", "alerted")

PROFILES = {
    "ci": settings(
        max_examples=8,
        stateful_step_count=12,
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.reuse, Phase.generate),  # a failure is reported as found (see below)
        suppress_health_check=list(HealthCheck),
    ),
    "long": settings(
        max_examples=200,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    ),
}


#: What the examples did (printed at the end of the test: ``pytest -s``), to see what was explored.
STATISTICS: Counter[str] = Counter()
TIMES: Counter[str] = Counter()


class Killed(BaseException):
    """A process killed at a checkpoint: no clean-up reaches the store (its proxy refuses it all)."""


@dataclass
class Resource:
    """One site or slot as the model knows it: the truth the audit must find."""

    name: str
    site: Site | None
    failing: bool = False
    exempt: tuple[datetime, datetime] | None = None  # (created, expires), true time
    deletable: bool = False
    parent: str = ""  # a slot's site: the site's exemption covers its slots (a scope is a prefix)

    @property
    def key(self) -> str:
        assert self.site is not None
        return fold(self.site.id)


@dataclass
class Attempt:
    """One invocation of the engine, and what the model saw of it."""

    number: int
    kind: str  # nightly | changes
    host: str
    at: datetime  # true time
    host_now: datetime
    crash: tuple[str, str] | None  # (stage, "exception" | "kill")
    reached: list[str] = field(default_factory=list)
    run_id: str = ""
    baseline: bool = False
    outcome: str = ""  # "" when it was skipped (another held the lease)
    forbidden: bool = False
    committed_seq: int | None = None  # when its state was stored (global order)
    truth: dict[str, str] = field(default_factory=dict)  # key -> FAIL / OK at this attempt (host time)
    frozen_index: dict[str, bool] | None = None  # Resource Graph's index, when frozen: key -> failing
    host_times: set[datetime] = field(default_factory=set)  # what its clock answered (its rows' AuditedAt)
    thread: int = 0  # the invoking thread (its RunSummary is logged there)
    crashed: bool = False  # the crash came (a run with no alert to send never reaches "marked")
    error: str = ""  # a failed run's Error

    @property
    def alert_step_done(self) -> bool:
        if not self.crashed:
            return self.outcome in ("complete", "partial")
        return self.crash is not None and self.crash[0] == "alerted"

    @property
    def lost_in_window(self) -> bool:
        return self.crashed and self.crash is not None and self.crash[0] == "marked"


@dataclass(frozen=True)
class Observation:
    seq: int
    attempt: int
    run_id: str
    key: str
    status: str  # FAIL | OK | ABSENT
    baseline: bool


class World:
    """What every example shares: the ARM emulator, Azurite, one fault proxy per host (each host's
    own view of the table service, whose clock the model moves), the test's monkeypatch and caplog."""

    def __init__(self, make_arm: Any, azurite: Any, monkeypatch: Any, caplog: Any) -> None:
        self.arm = make_arm(Tenant())
        self.azurite = azurite
        self.monkeypatch = monkeypatch
        self.caplog = caplog
        self.proxies = {name: FaultProxy(azurite.port, azurite.tls).start() for name in HOSTS}

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()


class ExactlyOnce(RuleBasedStateMachine):
    world: World  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        world = self.world
        self.T = T0
        self.mono = 0.0
        self.skew = dict.fromkeys(HOSTS, 0.0)
        self.frozen = dict.fromkeys(HOSTS, 0.0)
        self.tenant = Tenant()
        sub = self.tenant.add_subscription(SUB, display_name="prod")
        web = sub.add_site("rg-µsvc", "web", id_casing="upper-rg", tags={"owner": "web-team"}, **REQ)
        self.resources = {
            "web": Resource("web", web),
            "stage": Resource("stage", web.add_slot("stage", **REQ), parent="web"),
            "api": Resource("api", sub.add_site("rg-a", "api", **REQ)),
            "job": Resource("job", sub.add_site("rg-a", "job", **REQ), deletable=True),
        }
        self.sub = sub
        self.changes = self.tenant.start_change_log(lambda: self.T)
        arm = world.arm
        arm.tenant = self.tenant
        arm.faults.clear()
        arm.change_lag_seconds = 0.0
        arm.thaw_resource_graph()
        for proxy in world.proxies.values():
            proxy.faults.clear()
        self.h = AuditHarness(arm, world.azurite, world.monkeypatch, world.caplog)
        with self.h.service() as svc:  # fresh tables for every example, on the one Azurite
            for table in self.h.tables.values():
                svc.create_table_if_not_exists(table)
        logging.getLogger().addHandler(self.h.host)
        self.source = "arm"
        self.forbid_next = False
        self.transient_next = False
        self.frozen_index: dict[str, bool] | None = None
        self.attempts: list[Attempt] = []
        self.started: dict[int, float] = {}  # attempt -> time.time() it started (its log records after it)
        self.observations: list[Observation] = []
        self.seq = itertools.count(1)

    def teardown(self) -> None:
        for attempt in self.attempts:
            stop = f"{attempt.crash[1]} at {attempt.crash[0]}" if attempt.crashed and attempt.crash else "no crash"
            why = f" ({attempt.error[:70]})" if attempt.outcome == "failed" and not attempt.crashed else ""
            STATISTICS[f"{attempt.kind}: {attempt.outcome or 'skipped'}, {stop}{why}"] += 1
        STATISTICS["NewFailure events"] += len(self.h.new_failure_events())
        STATISTICS["examples"] += 1
        logging.getLogger().removeHandler(self.h.host)
        self.world.arm.thaw_resource_graph()
        with self.h.service() as svc:
            for table in self.h.tables.values():
                svc.delete_table(table)

    # -- the truth ------------------------------------------------------------------------------------
    def truth(self, at_host: datetime, index: dict[str, bool] | None = None) -> dict[str, str]:
        """Each existing resource's verdict at the host time ``at_host`` (FAIL or OK); with ``index``
        (a frozen Resource Graph index), of the resources and configurations it holds instead. An
        exemption is judged at ``at_host`` either way (the engine applies it when it evaluates)."""
        failing = index if index is not None else {r.key: r.failing for r in self.resources.values() if r.site}
        out = {}
        for res in self.resources.values():
            key = res.key if res.site is not None else self._job_key if res.name == "job" else ""
            if key not in failing:
                continue
            scopes = [res.exempt] + ([self.resources[res.parent].exempt] if res.parent else [])
            exempt = any(e is not None and e[0] <= at_host < e[1] for e in scopes)
            out[key] = "FAIL" if failing[key] and not exempt else "OK"
        return out

    def host_now(self, host: str) -> datetime:
        return self.T + timedelta(seconds=self.skew[host])

    def clock(self, host: str, attempt: Attempt) -> Clock:
        def sleep(seconds: float) -> None:  # a run that waits lets the model's time pass
            self.advance_time(seconds)

        def now() -> datetime:
            value = self.host_now(host)
            attempt.host_times.add(value)
            return value

        return Clock(now=now, monotonic=lambda: self.mono - self.frozen[host], sleep=sleep)

    def advance_time(self, seconds: float) -> None:
        self.T += timedelta(seconds=seconds)
        self.mono += seconds
        self.sync_service_clock()

    def sync_service_clock(self) -> None:
        offset = (self.T - datetime.now(UTC)).total_seconds()
        for proxy in self.world.proxies.values():
            proxy.date_offset = offset

    # -- running the engine as the worker does ---------------------------------------------------------
    def settings_for(self, host: str) -> Any:
        env = {
            **self.h.env,
            "AUDIT_TABLE_SERVICE_URI": self.world.proxies[host].url(),
            "AUDIT_RETRY_TOTAL": "0",
            "AUDIT_INVENTORY_SOURCE": self.source,
        }
        return load_settings(env)

    def invoke(self, kind: str, host: str, crash: tuple[str, str] | None, hook_extra: Any = None) -> Attempt:
        self.sync_service_clock()
        proxy = self.world.proxies[host]
        proxy.faults.clear()  # a new process on this host
        attempt = Attempt(
            len(self.attempts),
            kind,
            host,
            self.T,
            self.host_now(host),
            crash,
            forbidden=self.forbid_next and self.source == "arm",  # Resource Graph answers for it all the same
        )
        attempt.truth = self.truth(attempt.host_now)
        attempt.frozen_index = self.frozen_index
        self.started[attempt.number] = time.time()
        self.attempts.append(attempt)
        rules = self._one_run_faults()
        settings_ = self.settings_for(host)
        clock = self.clock(host, attempt)
        attempt.thread = threading.get_ident()

        def hook(stage: str, _sub: str) -> None:
            run = sys._getframe(1).f_locals["self"].run.summary  # the pipeline's run: a killed run logs none
            attempt.run_id, attempt.baseline = run.run_id, run.baseline
            attempt.reached.append(stage)
            if stage == "state_advanced" and attempt.committed_seq is None:
                attempt.committed_seq = next(self.seq)
            if hook_extra is not None:
                hook_extra(stage)
            if crash is not None and stage == crash[0]:
                attempt.crashed = True
                if crash[1] == "kill":
                    proxy.faults.add(FaultRule(Status(503), method="*"))
                    raise Killed(f"killed at {stage}")
                raise RuntimeError(f"injected crash at {stage}")

        def timer(context: Any) -> None:
            init = invocation_initializer(context)
            try:
                if kind == "nightly":
                    run_audit(settings_, thread_init=init, clock=clock, checkpoint=hook)
                else:
                    poll_changes(settings_, thread_init=init, clock=clock, checkpoint=hook)
            except RunInProgressError:
                pass

        began = time.monotonic()
        try:
            self.h.host.invoke(timer)
        except (Exception, Killed):
            pass
        finally:
            TIMES[kind] += time.monotonic() - began
            TIMES[kind + " runs"] += 1
            for rule_ in rules:
                self.world.arm.faults.remove(rule_)
        self._record(attempt)
        return attempt

    def _one_run_faults(self) -> list[FaultRule]:
        rules = []
        if self.forbid_next:
            rules.append(self.world.arm.faults.forbid_subscription(SUB))
            self.forbid_next = False
        if self.transient_next:
            rules.append(self.world.arm.faults.add(FaultRule(Status(503), path=r"/sites/api$", times=1)))
            self.transient_next = False
        return rules

    def _record(self, attempt: Attempt) -> None:
        """What the attempt left: its RunSummary (its RunId), and, if it stored its state, its rows as
        observations, each checked against the truth."""
        records = [
            r for r in self.h.host.kept if r.thread == attempt.thread and r.created >= self.started[attempt.number]
        ]
        mine = event_payloads(records, RUN_SUMMARY_EVENT)
        if mine:
            summary = mine[-1]
            attempt.run_id = summary["RunId"]
            attempt.baseline = bool(summary["Baseline"])
            attempt.outcome = summary["Outcome"]
            attempt.error = str(summary.get("Error") or "")
        if not attempt.run_id or attempt.committed_seq is None:
            return
        every_row = self.h.rows(attempt.run_id)  # a resumed attempt's run keeps its earlier attempt's rows
        listed = {fold(r["ResourceId"]) for r in every_row}
        rows = [r for r in every_row if r["AuditedAt"] in attempt.host_times]
        for row in rows:
            if row["Status"] == "ERROR":
                continue
            key = fold(row["ResourceId"])
            status = "FAIL" if row["Status"] == "FAIL" else "OK"
            truths = {self.truth(row["AuditedAt"]).get(key)}
            if self.source == "resourcegraph" and attempt.kind == "nightly" and attempt.frozen_index is not None:
                truths.add(self.truth(row["AuditedAt"], attempt.frozen_index).get(key))
            assert status in truths, f"attempt {attempt.number}: row of {key} says {row['Status']}, truth {truths}"
            self.observations.append(
                Observation(attempt.committed_seq, attempt.number, attempt.run_id, key, status, attempt.baseline)
            )
        if attempt.kind == "nightly" and attempt.outcome == "complete" and self._job_key not in listed:
            self.observations.append(  # listed completely without it: the nightly run retires it
                Observation(attempt.committed_seq, attempt.number, attempt.run_id, self._job_key, "ABSENT", False)
            )

    @property
    def _job_key(self) -> str:
        return fold(f"/subscriptions/{SUB}/resourceGroups/rg-a/providers/Microsoft.Web/sites/job")

    # -- what can happen: one rule, so that every step runs the engine ----------------------------------
    @initialize(
        source=st.sampled_from(["arm", "arm", "resourcegraph"]),
        failing=st.sets(st.sampled_from(["web", "stage", "api", "job"])),
        crash=st.sampled_from([None, None, None, ("state_advanced", "kill"), ("rows_written", "exception")]),
    )
    def baseline(self, source: str, failing: set[str], crash: tuple[str, str] | None) -> None:
        """The estate as the first nightly run finds it (perhaps dying on the way)."""
        self.source = source
        for name in failing:
            self.set_failing(name, True)
        self.invoke("nightly", "a", crash)
        self.check()

    FAILING = st.tuples(st.just("fail"), st.sampled_from(["web", "stage", "api", "job"]), st.just(True))
    CHANGES = st.one_of(
        FAILING,  # weighted: a run that crashes after its mark needs a new failure to mark
        FAILING,
        FAILING,
        st.tuples(st.just("fail"), st.sampled_from(["web", "stage", "api", "job"]), st.just(False)),
        st.tuples(st.just("job"), st.booleans()),
        st.tuples(st.just("exempt"), st.sampled_from(["web", "api"]), st.sampled_from([1, 6, 30])),
        st.tuples(st.just("recase"), st.sampled_from(["web", "stage", "api"])),
        st.tuples(st.just("lag"), st.sampled_from([0, 300, 2400])),
        st.tuples(st.just("index"), st.booleans()),
        st.tuples(st.just("skew"), st.sampled_from(HOSTS), st.sampled_from([0, -600, 120, 900])),
        st.just(("forbid",)),
        st.just(("transient",)),
        st.just(("nothing",)),
    )
    CRASHES = st.one_of(
        st.none(), st.none(), st.tuples(st.sampled_from(STAGES), st.sampled_from(["exception", "kill"]))
    )

    @rule(
        change=CHANGES,
        minutes=st.sampled_from([0, 1, 10, 10, 60, 6 * 60, 24 * 60]),
        run=st.sampled_from(["nightly", "changes", "changes", "takeover"]),
        host=st.sampled_from(HOSTS),
        crash=CRASHES,
        other=st.sampled_from(["nightly", "changes"]),
    )
    def step(
        self, change: tuple[Any, ...], minutes: int, run: str, host: str, crash: tuple[str, str] | None, other: str
    ) -> None:
        """Something changes, time passes, and a run comes (a nightly run, a poll, or a frozen
        nightly run another host takes over from)."""
        self.apply(change)
        self.advance_time(minutes * 60)
        if run == "takeover":
            self.frozen_holder_and_a_takeover("rows_written" if crash is None else "state_advanced", other)
        else:
            self.invoke(run, host, crash)
        self.check()

    @rule(
        name=st.sampled_from(["web", "stage", "api", "job"]),
        run=st.sampled_from(["nightly", "changes"]),
        host=st.sampled_from(HOSTS),
        crash=st.tuples(
            st.sampled_from(["marked", "alerted", "state_advanced"]), st.sampled_from(["exception", "kill"])
        ),
        minutes=st.sampled_from([1, 10, 60]),
    )
    def break_and_crash(self, name: str, run: str, host: str, crash: tuple[str, str], minutes: int) -> None:
        """An app breaks and the run that finds it dies at its alert step (the window among them):
        the crashes a random step rarely lines up with a new failure."""
        self.set_failing(name, True)
        self.advance_time(minutes * 60)
        self.invoke(run, host, crash)
        self.check()

    @rule(
        name=st.sampled_from(["web", "stage", "api", "job"]),
        stage=st.sampled_from(["rows_written", "state_advanced"]),
        other=st.sampled_from(["nightly", "changes"]),
    )
    def break_and_take_over(self, name: str, stage: str, other: str) -> None:
        """An app breaks, and the nightly run that finds it freezes before its state (or its alerts)
        for longer than the lease while the other host's run takes over and alerts it: the frozen
        run's late writes must send nothing."""
        self.set_failing(name, True)
        self.advance_time(10 * 60)
        self.frozen_holder_and_a_takeover(stage, other)
        self.check()

    def apply(self, change: tuple[Any, ...]) -> None:
        what = change[0]
        if what == "fail":
            self.set_failing(change[1], change[2])
        elif what == "job":
            self.delete_or_recreate_job(change[1])
        elif what == "exempt":
            self.exempt(change[1], change[2])
        elif what == "recase":
            self.recased_duplicate_change(change[1])
        elif what == "lag":
            self.world.arm.change_lag_seconds = float(change[1])
        elif what == "index":
            self.resource_graph_index(change[1])
        elif what == "skew":
            self.skew[change[1]] = float(change[2])
        elif what == "forbid":
            self.forbid_next = True
        elif what == "transient":
            self.transient_next = True

    def set_failing(self, name: str, failing: bool) -> None:
        res = self.resources[name]
        if res.site is None:
            return
        res.failing = failing
        res.site.update(client_cert_mode="Optional" if failing else "Required")

    def delete_or_recreate_job(self, failing: bool) -> None:
        res = self.resources["job"]
        if res.site is not None:
            self.sub.remove_site(res.site)
            res.site, res.failing, res.exempt = None, False, None
        else:
            mode = "Optional" if failing else "Required"
            res.site = self.sub.add_site("rg-a", "job", client_cert_enabled=True, client_cert_mode=mode)
            res.failing = failing

    def exempt(self, name: str, hours: int) -> None:
        res = self.resources[name]
        assert res.site is not None
        exemption = new_exemption(res.site.id, "accepted for now", "sec-lead", self.T + timedelta(hours=hours), self.T)
        with self.h.service() as svc:
            svc.get_table_client(self.h.tables["AUDIT_EXEMPTIONS_TABLE"]).upsert_entity(exemption_row(exemption))
        res.exempt = (exemption.created, exemption.expires)

    def recased_duplicate_change(self, name: str) -> None:
        res = self.resources[name]
        assert res.site is not None
        self.changes.append(ResourceChange(self.T, res.site.id.upper(), res.site.resource_type, "Update", "dup"))

    def resource_graph_index(self, frozen: bool) -> None:
        if self.source != "resourcegraph":
            return
        if frozen:
            if self.frozen_index is None:  # frozen again, the index stays as it first froze
                self.world.arm.freeze_resource_graph()
                self.frozen_index = {r.key: r.failing for r in self.resources.values() if r.site is not None}
        else:
            self.world.arm.thaw_resource_graph()
            self.frozen_index = None

    def frozen_holder_and_a_takeover(self, stage: str, other: str) -> None:
        """Host a's nightly run freezes at ``stage`` (its own clock stops) for longer than the lease;
        host b runs meanwhile; then a wakes up and carries on."""
        paused, wake = threading.Event(), threading.Event()

        def pause(reached: str) -> None:
            if reached == stage and not paused.is_set():
                paused.set()
                wake.wait(60)

        self.forbid_next = self.transient_next = False  # ARM's faults are everyone's: not in this interleaving
        thread = threading.Thread(target=lambda: self.invoke("nightly", "a", None, pause))
        thread.start()
        while not paused.is_set() and thread.is_alive():
            paused.wait(0.05)
        if not paused.is_set():  # skipped (the lease was held), or done before the stage
            thread.join(60)
            return
        jump = 11 * 60.0
        self.frozen["a"] += jump
        self.advance_time(jump)
        self.invoke(other, "b", None)
        wake.set()
        thread.join(60)
        self.frozen["a"] = 0.0

    # -- the oracle ------------------------------------------------------------------------------------
    @invariant()
    def rows_agree_with_alerts(self) -> None:
        for event in self.h.new_failure_events():
            rows = [r for r in self.h.rows(event["RunId"]) if fold(r["ResourceId"]) == fold(event["ResourceId"])]
            assert len(rows) == 1, f"one row of {event['ResourceId']} in run {event['RunId']}: {len(rows)}"
            assert rows[0]["NewFailure"] is True, (event, rows[0])
            assert rows[0]["FirstFailedAt"] == event["FirstFailedAt"], (event, rows[0])

    def check(self) -> None:
        episodes = self.episodes()
        events = self.h.new_failure_events()
        by_episode: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            key = fold(event["ResourceId"])
            found = [o for o in self.observations if o.key == key and o.run_id == event["RunId"] and o.status == "FAIL"]
            assert found, f"an alert with no failing observation of its run: {event}"
            episode = next(i for i, ep in enumerate(episodes[key]) if found[0] in ep)
            by_episode[(key, episode)].append(event)
        for key, eps in episodes.items():
            for i, ep in enumerate(eps):
                sent = by_episode.get((key, i), [])
                assert len(sent) <= 1, f"{key}: {len(sent)} alerts for one failure episode: {sent}"
                if ep[0].baseline:
                    assert not sent, f"{key}: an alert for a failure the baseline found: {sent}"
                    continue
                attempts = {o.attempt for o in ep}
                owed = any(self.attempts[a].alert_step_done for a in attempts)
                lost = any(self.attempts[a].lost_in_window for a in attempts)
                if owed and not lost:
                    assert sent, f"{key}: no alert for the failure episode {ep}"
        self.every_complete_night_has_its_rows()

    def episodes(self) -> dict[str, list[list[Observation]]]:
        """Each resource's failure episodes: runs of failing observations (in the order their state was
        stored) between two that were not."""
        out: dict[str, list[list[Observation]]] = defaultdict(list)
        current: dict[str, list[Observation] | None] = {}
        for obs in sorted(self.observations, key=lambda o: (o.seq, o.attempt)):
            if obs.status == "FAIL":
                if current.get(obs.key) is None:
                    current[obs.key] = []
                    out[obs.key].append(current[obs.key])  # type: ignore[arg-type]
                current[obs.key].append(obs)  # type: ignore[union-attr]
            else:
                current[obs.key] = None
        return out

    def every_complete_night_has_its_rows(self) -> None:
        for attempt in self.attempts:
            if attempt.kind != "nightly" or attempt.outcome in ("", "failed") or attempt.crashed:
                continue
            rows = self.h.rows(attempt.run_id)
            keys = [fold(r["ResourceId"]) for r in rows]
            assert len(keys) == len(set(keys)), f"run {attempt.run_id}: two rows for one resource"
            if attempt.forbidden:
                assert fold(f"/subscriptions/{SUB}") in keys, f"run {attempt.run_id}: no ERROR row for its scope"
                continue
            expected = {k for k, v in attempt.truth.items() if v != "ABSENT"}
            if self.source == "resourcegraph" and attempt.frozen_index is not None:
                indexed = set(attempt.frozen_index)  # listed by the lagging index
                assert set(keys) <= expected | indexed, (attempt.run_id, keys)
                assert expected & indexed <= set(keys), (
                    f"run {attempt.run_id}: no row for {expected & indexed - set(keys)}"
                )
                continue
            assert expected <= set(keys), f"run {attempt.run_id}: no row for {expected - set(keys)}"


@pytest.fixture
def world(make_arm: Any, azurite: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> Any:
    from shared.run import ledger

    monkeypatch.setattr(ledger, "LEASE_WAIT_SECONDS", 60.0)  # a nightly run waiting for a dead poll: minutes
    made = World(make_arm, azurite, monkeypatch, caplog)
    yield made
    made.close()


def test_model_every_failure_episode_is_alerted_exactly_once(world: World) -> None:
    ExactlyOnce.world = world
    STATISTICS.clear()
    profile = PROFILES[os.environ.get("AUDIT_MODEL_PROFILE", "ci")]
    if os.environ.get("AUDIT_MODEL_EXAMPLES"):
        profile = settings(profile, max_examples=int(os.environ["AUDIT_MODEL_EXAMPLES"]))
    if os.environ.get("AUDIT_MODEL_SHRINK"):  # minimise what the CI profile found (slow: minutes)
        profile = settings(profile, phases=tuple(Phase))
    run_state_machine_as_test(ExactlyOnce, settings=profile)
    print("\n".join(f"{count:5d}  {what}" for what, count in sorted(STATISTICS.items())))
    print("\n".join(f"{count:8.1f}  {what}" for what, count in sorted(TIMES.items())))


@pytest.mark.parametrize("rows", [1_000, 1], ids=["shared-bucket", "cut-by-shard"])
def test_model_every_failure_episode_is_alerted_exactly_once_when_subscriptions_are_sliced(
    world: World, monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """The same machine with a slice of two resources: the subscription (four) is listed to disk and
    compared with its state in four slices (``shared/run/slices.py``), each queued, stored, alerted
    and resumed on its own. Fewer examples (3 of each variant in CI, the same derandomized ones
    first): the slices add a path, not new interleavings of the ledger. ``rows``: its state in a
    shared bucket (slices cut by the hash, their rows sent with the last one's), or a shard per
    resource, so that the slices are cut again by shard and each sends its own state as it is
    queued (while it lists as many as it has shards)."""
    from shared.core import layout
    from shared.run import pipeline

    monkeypatch.setattr(pipeline, "SLICE_RESOURCES", 2)
    monkeypatch.setattr(layout, "PARTITION_ROWS", rows)
    ExactlyOnce.world = world
    profile = PROFILES[os.environ.get("AUDIT_MODEL_PROFILE", "ci")]
    examples = int(os.environ.get("AUDIT_MODEL_EXAMPLES") or (3 if profile is PROFILES["ci"] else profile.max_examples))
    run_state_machine_as_test(ExactlyOnce, settings=settings(profile, max_examples=examples))


# -- every counterexample the model found, kept ------------------------------------------------------------
def replay(world: World, baseline: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    """Run one sequence of the machine's rules, checking the invariant after each (as Hypothesis does)."""
    ExactlyOnce.world = world
    machine = ExactlyOnce()
    try:
        machine.baseline(**baseline)
        machine.rows_agree_with_alerts()
        for step in steps:
            machine.step(**{"crash": None, "host": "a", "minutes": 10, "other": "nightly", **step})
            machine.rows_agree_with_alerts()
    finally:
        machine.teardown()


def test_found_a_sites_exemption_covers_its_slot(world: World) -> None:
    """An exemption of a site covers its slots (a scope is a prefix): the slot's row is EXEMPT."""
    replay(
        world,
        {"source": "arm", "failing": {"stage", "api", "web"}, "crash": None},
        [
            {"change": ("fail", "web", False), "minutes": 0, "run": "nightly"},
            {"change": ("fail", "web", True), "minutes": 0, "run": "changes"},
            {"change": ("exempt", "web", 30), "run": "nightly"},
        ],
    )


def test_found_a_poll_killed_after_its_mark_loses_the_alert_and_the_nightly_run_sends_none(world: World) -> None:
    """A poll killed in the window (its mark stored, its event not logged): the event is lost, never
    sent twice; the nightly run that takes over from the dead poll's lease sees the alert as sent."""
    replay(
        world,
        {"source": "resourcegraph", "failing": set(), "crash": None},
        [
            {"change": ("fail", "stage", True), "crash": ("marked", "kill"), "host": "b", "run": "changes"},
            {
                "change": ("lag", 300),
                "crash": ("rows_written", "kill"),
                "host": "b",
                "minutes": 1,
                "other": "changes",
                "run": "takeover",
            },
        ],
    )


def test_found_a_lagging_index_frozen_twice_keeps_its_first_picture(world: World) -> None:
    """Resource Graph's index frozen while a resource is deleted: the nightly run lists what the index
    holds (a row for the deleted app), every row true of the index or of ARM."""
    replay(
        world,
        {"source": "resourcegraph", "failing": set(), "crash": None},
        [
            {"change": ("lag", 300), "crash": ("marked", "kill"), "host": "b", "minutes": 360, "run": "nightly"},
            {"change": ("index", True), "host": "a", "minutes": 1440, "run": "nightly"},
            {"change": ("job", True), "minutes": 1, "run": "nightly"},
            {"change": ("index", True), "host": "b", "run": "changes"},
            {"change": ("recase", "stage"), "crash": ("state_advanced", "kill"), "run": "takeover"},
        ],
    )


def test_found_a_resumed_run_keeps_the_rows_of_its_frozen_first_attempt(world: World) -> None:
    """A nightly run frozen after its state, resumed by the other host's nightly run: the resumed run
    keeps the first attempt's rows (no resource is "missing" from the run), and no alert is sent
    for a failure the baseline found."""
    replay(
        world,
        {"source": "resourcegraph", "failing": {"stage", "api", "job", "web"}, "crash": None},
        [
            {"change": ("fail", "web", False), "crash": ("alerted", "kill"), "run": "takeover"},
            {"change": ("skew", "b", 900), "host": "b", "minutes": 0, "other": "changes", "run": "changes"},
        ],
    )


def test_found_a_frozen_holders_late_writes_send_nothing(world: World) -> None:
    """Found against a mutant of the engine whose state writes were not fenced by the row's ETag: the
    nightly run frozen after its rows wakes after the other host's run alerted the new failure, and
    its late state write and mark would send the alert a second time."""
    ExactlyOnce.world = world
    machine = ExactlyOnce()
    try:
        machine.baseline(source="arm", failing=set(), crash=None)
        machine.rows_agree_with_alerts()
        machine.break_and_take_over(name="web", other="nightly", stage="rows_written")
        machine.rows_agree_with_alerts()
        machine.break_and_take_over(name="api", other="changes", stage="state_advanced")
        machine.rows_agree_with_alerts()
    finally:
        machine.teardown()
