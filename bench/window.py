"""Benchmark: the one window left in "every new failure is alerted exactly once".

An owed alert's state row is first marked sent (``AlertPending = false``, one conditional
transaction of up to 100 rows of one partition), and only then are its events logged
(``shared/run/pipeline.py``, ``_alert``). A process that dies after the mark is stored and before an
event is handed to ``logging`` loses that event; it can never send one twice. This measures how
long that window is open, with the real engine, the real Table SDK, Azurite and the ARM emulator:

* ``from the mark's answer``: from the moment the mark transaction's answer reached the process
  (the ``marked`` checkpoint, called right after ``TableStore.write_state`` returns) to the moment
  each event's record reaches a logging handler. The mark was committed before its answer was
  sent, so this is the *lower* bound of the window.
* ``from the mark's request``: from the moment the mark transaction was sent
  (``TableStore.write_state`` called) to each event's record: the *upper* bound (the store
  committed it somewhere in between).

The worst event of a batch is its last one (up to 100 events follow one mark). The window does
not include what the Functions host does after ``logging`` took the record (a host that dies
before shipping it loses it whatever the engine does).

``PYTHONPATH=. .venv/bin/python -m bench.window`` (see bench/README.md, "The one window left").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.changes import NIGHT, Deployment, HttpCounter, NewFailureTimes
from shared.azure.store import TableStore
from shared.core.config import load_settings
from shared.core.events import EVENT_LOGGER_NAME, NEW_FAILURE_EVENT
from shared.run.audit import run_audit
from tests.emulators.azurite import Azurite, repo_root
from tests.emulators.tls import make_tls


class MarkTimes:
    """When each mark transaction was sent and when its answer came back (monotonic seconds),
    per thread (the pipeline marks and logs a batch on one thread)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.batches: list[tuple[float, float, int]] = []  # (sent, answered, thread)
        self._guard = threading.Lock()

    def wrap(self, write_state: Callable[..., Any]) -> Callable[..., Any]:
        def timed(store: TableStore, entities: list[dict[str, Any]]) -> Any:
            self._local.sent = time.monotonic()
            return write_state(store, entities)

        return timed

    def checkpoint(self, stage: str, _subscription_id: str) -> None:
        if stage == "marked":
            answered = time.monotonic()
            with self._guard:
                self.batches.append((self._local.sent, answered, threading.get_ident()))


class EventTimes(logging.Handler):
    """When each NewFailure record reached ``logging`` (monotonic seconds), and on which thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[float, int]] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        at = time.monotonic()
        if record.getMessage().startswith(NEW_FAILURE_EVENT + " "):
            with self._guard:
                self.seen.append((at, record.thread or 0))


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6, 1),
        "worst_us": round(ordered[-1] * 1e6, 1),
    }


def measure(args: argparse.Namespace, deployment: Deployment, failures: EventTimes) -> dict[str, Any]:
    """A baseline night, then ``--failing`` apps break and the next night alerts them all."""
    deployment.nightly()
    for site in deployment.resources[: args.failing]:
        site.update(client_cert_mode="Optional")
    marks = MarkTimes()
    original = TableStore.write_state
    TableStore.write_state = marks.wrap(original)  # type: ignore[method-assign]
    failures.seen.clear()
    try:
        with deployment.environment():
            summary = run_audit(load_settings(), now=lambda: NIGHT + timedelta(days=1), checkpoint=marks.checkpoint)
    finally:
        TableStore.write_state = original  # type: ignore[method-assign]
    events = sorted(failures.seen)
    if summary.alerts_sent != args.failing or len(events) != args.failing:
        raise RuntimeError(f"expected {args.failing} alerts, the run sent {summary.alerts_sent} ({len(events)} seen)")
    batches = sorted(marks.batches)
    lower: list[float] = []
    upper: list[float] = []
    last_lower: list[float] = []
    last_upper: list[float] = []
    for sent, answered, thread in batches:  # a batch's events follow its mark on its thread
        later = [s for s, _, t in batches if t == thread and s > sent]
        until = min(later, default=float("inf"))
        mine = [at for at, t in events if t == thread and answered <= at < until]
        if not mine:
            raise RuntimeError("a mark with no event after it on its thread")
        lower += [at - answered for at in mine]
        upper += [at - sent for at in mine]
        last_lower.append(mine[-1] - answered)
        last_upper.append(mine[-1] - sent)
    if len(lower) != len(events):
        raise RuntimeError(f"{len(events) - len(lower)} events followed no mark on their thread")
    return {
        "alerts": len(events),
        "mark_batches": len(batches),
        "from_the_marks_answer": {"every_event": _stats(lower), "last_event_of_a_batch": _stats(last_lower)},
        "from_the_marks_request": {"every_event": _stats(upper), "last_event_of_a_batch": _stats(last_upper)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.window", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=1000, help="production sites (default 1000)")
    parser.add_argument("--subscriptions", type=int, default=4)
    parser.add_argument("--failing", type=int, default=1000, help="apps that break before the second night")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--workdir", type=Path, default=None, help="TLS and Azurite data (default: a temp dir)")
    args = parser.parse_args(argv)
    args.slot_share, args.seed, args.latency, args.no_throttle = 0.0, 1, 0.0, True
    args.concurrency, args.overlap_minutes = 8, 30
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="clientcert-bench-window-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tls = make_tls(workdir / "tls")
    logging.basicConfig(level=logging.ERROR)
    events = logging.getLogger(EVENT_LOGGER_NAME)
    failures = EventTimes()
    events.addHandler(failures)
    level, events.propagate = events.level, False  # the events are only timed here
    events.setLevel(logging.INFO)
    load = [round(x, 2) for x in os.getloadavg()]
    try:
        with Azurite(workdir / "azurite", tls) as azurite:
            deployment = Deployment(args, tls, azurite, HttpCounter(), NewFailureTimes())
            try:
                figures = measure(args, deployment, failures)
            finally:
                deployment.close()
    finally:
        events.removeHandler(failures)
        events.propagate = True
        events.setLevel(level)
    figures["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [load, [round(x, 2) for x in os.getloadavg()]],
    }
    print(f"{figures['alerts']} NewFailure events after {figures['mark_batches']} mark transactions")
    print(f"{'window, microseconds':42} {'median':>10} {'p99':>10} {'worst':>10}")
    for bound in ("from_the_marks_answer", "from_the_marks_request"):
        for which in ("every_event", "last_event_of_a_batch"):
            s = figures[bound][which]
            label = f"{bound.replace('_', ' ')}, {which.replace('_', ' ')}"
            print(f"{label:42} {s['median_us']:>10} {s['p99_us']:>10} {s['worst_us']:>10}")
    out = args.json or repo_root() / "bench" / "results-window.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"Figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
