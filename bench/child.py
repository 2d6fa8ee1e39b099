"""The audit under measurement: the timer function, invoked as the Functions worker does.

Run by the benchmark as ``python -m bench.child [--profile FILE | --tracemalloc FILE]`` with the audit's settings in
the environment; the parent reads this process's CPU time and peak RSS with ``wait4``. With
``--profile``, every thread runs under cProfile and the merged stats are dumped to FILE; with
``--tracemalloc``, where the memory was at its peak is written to FILE; with ``--census FILE``, the
live objects by kind at the largest live heap (and with ``--census-every``, through the run and
after it: ``bench.census`` compares them).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import ctypes.util
import gc
import itertools
import json
import logging
import os
import pstats
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def run_timer() -> None:
    import uuid

    from azure.functions.timer import TimerRequest

    import function_app
    from tests.harness import WORKER_THREAD_LOCAL, WorkerContext

    functions = function_app.app.get_functions()
    invocation_id = str(uuid.uuid4())
    WORKER_THREAD_LOCAL.invocation_id = invocation_id  # as the worker does, on the invoking thread
    functions[0].get_user_function()(
        TimerRequest(past_due=False), context=WorkerContext(invocation_id, "clientcert_audit")
    )


def profiled(target: Any, out: str) -> None:
    """Run ``target`` with a cProfile per thread (the engine fans out to a thread pool)."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile()
    main.enable()
    try:
        target()
    finally:
        main.disable()
        threading.Thread.run = original_run  # type: ignore[method-assign]
        stats = pstats.Stats(main)
        for profile in profiles[1:]:
            try:
                stats.add(profile)
            except TypeError:  # a thread that never ran anything
                continue
        stats.dump_stats(out)


def _rss_mb() -> tuple[float, float]:
    """This process's resident set now and at its peak (MB), from /proc (Linux)."""
    now = peak = 0.0
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return now, peak


def traced(target: Any, out: str, frames: int = 12, every: float = 0.5) -> None:
    """Run ``target`` under tracemalloc and write where the memory was at its largest.

    A sampler thread takes a snapshot whenever the traced memory reaches a new high (5 % above the
    last snapshot), so the report shows the allocations alive at (about) the peak, grouped by
    traceback, next to the process's RSS at that moment. Slow (several times the CPU): for finding
    where memory goes on a small tenant, not for the figures.
    """
    tracemalloc.start(frames)
    best: dict[str, Any] = {"size": 0, "snapshot": None, "rss": (0.0, 0.0), "at": 0.0}
    done = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while not done.wait(every):
            current, _ = tracemalloc.get_traced_memory()
            if current > best["size"] * 1.05:
                best.update(
                    size=current, snapshot=tracemalloc.take_snapshot(), rss=_rss_mb(), at=time.monotonic() - started
                )

    sampler = threading.Thread(target=sample, name="tracemalloc-sampler", daemon=True)
    sampler.start()
    try:
        target()
    finally:
        done.set()
        sampler.join()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        lines = [
            f"traced peak {peak / 2**20:.1f} MiB; largest snapshot {best['size'] / 2**20:.1f} MiB at "
            f"{best['at']:.1f} s (RSS then {best['rss'][0]:.1f} MB, peak RSS then {best['rss'][1]:.1f} MB); "
            f"final peak RSS {_rss_mb()[1]:.1f} MB",
        ]
        snapshot = best["snapshot"]
        if snapshot is not None:
            snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            for title, key, limit in (("by line", "lineno", 40), ("by traceback", "traceback", 25)):
                lines.append(f"\n== top {limit} {title} ==")
                for stat in snapshot.statistics(key)[:limit]:
                    lines.append(f"{stat.size / 2**20:9.2f} MiB {stat.count:9d} blocks")
                    frames_out = stat.traceback.format(limit=frames if key == "traceback" else 1)
                    lines.extend("    " + line for line in frames_out)
        Path(out).write_text("\n".join(lines) + "\n")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ]


def _malloc_mb() -> tuple[float, float] | None:
    """glibc's heap (all arenas): (bytes handed out, bytes free inside its heaps) in MB; ``None``
    elsewhere. Python's own small objects live in pymalloc arenas outside it (mapped directly)."""
    name = ctypes.util.find_library("c")
    try:
        mallinfo2 = ctypes.CDLL(name).mallinfo2 if name else None
    except (OSError, AttributeError):
        return None
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


_PYMALLOC_LINES = {
    "arenas": re.compile(r"^# arenas allocated current\s*=\s*([\d,]+)", re.M),
    "highwater": re.compile(r"^# arenas highwater mark\s*=\s*([\d,]+)", re.M),
    "blocks": re.compile(r"^# bytes in allocated blocks\s*=\s*([\d,]+)", re.M),
}


def _pymalloc_mb() -> tuple[float, float, float] | None:
    """pymalloc's arenas (1 MiB each) now and at their high-water mark, and the bytes in live blocks
    in them, in MB (``_PyObject_DebugMallocStats``, written to a temporary file through libc's
    ``FILE``); ``None`` where that is unavailable. Arenas beyond the live blocks are pools that a
    few live objects keep: what the allocator holds, not what the program does."""
    name = ctypes.util.find_library("c")
    stats = getattr(ctypes.pythonapi, "_PyObject_DebugMallocStats", None)
    if not name or stats is None:
        return None
    libc = ctypes.CDLL(name)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stats.argtypes = [ctypes.c_void_p]
    with tempfile.TemporaryDirectory() as where:
        path = os.path.join(where, "stats")
        out = libc.fopen(path.encode(), b"w")
        if not out:
            return None
        try:
            stats(out)  # ctypes.pythonapi keeps the GIL: no object moves while it counts
        finally:
            libc.fclose(out)
        text = Path(path).read_text()
    found = {key: pattern.search(text) for key, pattern in _PYMALLOC_LINES.items()}
    if not all(found.values()):
        return None
    value = {key: int(match.group(1).replace(",", "")) for key, match in found.items() if match}
    return float(value["arenas"]), float(value["highwater"]), value["blocks"] / 2**20  # arenas are 1 MiB


def _key(key: object) -> str:
    """A dict key as :func:`_kind` names it: a string or a number as it is, anything else by its type.
    Never ``str()`` of an arbitrary object: its ``__str__`` may make a system call (a socket's asks
    for its address), which lets go of the GIL in the middle of a census (:func:`_alone`)."""
    return key if type(key) is str else str(key) if type(key) in (int, float, bool) else type(key).__qualname__


def _kind(obj: object) -> str:
    """What :func:`census` files an object under: a dict by its first three keys, a list or tuple by
    its size, a set by its first member's shape (ids with their GUIDs masked), the rest by type."""
    if type(obj) is dict:
        return "dict{" + ",".join(_key(k)[:24] for k in list(obj)[:3]) + "}"
    if type(obj) in (list, tuple):
        size = len(obj)  # type: ignore[arg-type]
        band = "0" if not size else "<10" if size < 10 else "<1000" if size < 1000 else "1000+"
        return f"{type(obj).__name__}[{band}]"
    if type(obj) in (set, frozenset):
        first = next(iter(obj), None)  # type: ignore[call-overload]
        shape = _GUID.sub("<guid>", first)[:40] if isinstance(first, str) else type(first).__name__
        return f"{type(obj).__name__}{{{shape}}}"
    return type(obj).__qualname__


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def census() -> list[tuple[str, int, int]]:
    """The live objects by kind, largest first: ``(kind, count, bytes)`` (``sys.getsizeof``, the
    object alone). Kinds are :func:`_kind`'s (a state row, a page's JSON object and a compact record
    look alike by type alone); dicts of strings and numbers only are not tracked by the collector,
    so the dicts, tuples and strings the tracked objects hold are counted too, once each, a string
    under the kind of the first object found holding it (``str<-set{...}``): who keeps them.
    Stops every other thread for a second or more (:func:`_alone`) and holds a set of ids: a
    diagnostic, not for figures."""
    with _alone():
        return _census()


@contextlib.contextmanager
def _alone() -> Iterator[None]:
    """No other thread runs while a census holds a reference to every object. An object another
    thread is building must keep its single reference: CPython grows a tuple built from an iterator
    in place (``_PyTuple_Resize``) only while nothing else refers to it, and fails with
    ``SystemError: bad argument to internal function`` otherwise (seen in the bench's smoke test,
    a census taken while the audit imported its modules). A waiting thread takes the GIL when the
    switch interval passes, so the interval is made longer than any census; the sleep lets the
    waits begun under the old one end first; and the collector is off, since a finalizer may do
    I/O and so let go of the GIL."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(3600.0)
    time.sleep(0.05)
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        sys.setswitchinterval(interval)


def _census() -> list[tuple[str, int, int]]:
    counts: dict[str, list[int]] = {}
    seen: set[int] = set()

    def add(obj: object, kind: str) -> None:
        entry = counts.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)

    tracked = gc.get_objects()
    for obj in tracked:
        seen.add(id(obj))
    for obj in tracked:
        if obj is seen:  # the census's own
            continue
        kind = _kind(obj)
        add(obj, kind)
        for inner in gc.get_referents(obj):
            if type(inner) in (dict, tuple, str) and id(inner) not in seen:
                seen.add(id(inner))
                inner_kind = _kind(inner)
                add(inner, f"str<-{kind}" if type(inner) is str else inner_kind)
                if type(inner) is not str:  # an untracked dict or tuple's own strings
                    for text in gc.get_referents(inner):
                        if type(text) is str and id(text) not in seen:
                            seen.add(id(text))
                            add(text, f"str<-{inner_kind}")
    del tracked, seen
    return sorted(((kind, n, size) for kind, (n, size) in counts.items()), key=lambda item: -item[2])


def census_at_highs(out: str, every: float = 2.0, spacing: float = 20.0) -> Callable[[], None]:
    """Write :func:`census` to ``out`` whenever Python's live blocks pass their last census by 3 %
    (at most every ``spacing`` seconds): the last one written is the census at (about) the run's
    largest live heap, with the process's RSS then. Returns what stops it (see :func:`_sampler`)."""
    done = threading.Event()

    def sample() -> None:
        best, last = 0, 0.0
        while not done.wait(every):
            blocks = sys.getallocatedblocks()
            if blocks < best * 1.03 or time.monotonic() - last < spacing:
                continue
            best, last = blocks, time.monotonic()
            write_census(Path(out), f"{blocks} Python blocks live", 60)

    return _sampler(sample, done, "census")


def _sampler(sample: Callable[[], None], done: threading.Event, name: str) -> Callable[[], None]:
    """Run ``sample`` on a thread of its own; the function returned stops it and waits for it: a
    census in progress holds every live object (``gc.get_objects``), so one taken after the run must
    not overlap it."""
    worker = threading.Thread(target=sample, name=name, daemon=True)
    worker.start()

    def stop() -> None:
        done.set()
        worker.join()

    return stop


def write_census(path: Path, header: str, kinds: int) -> None:
    """:func:`census`'s ``kinds`` largest kinds to ``path``, under a line of ``header`` and the RSS."""
    rows = census()
    lines = [f"{header}, rss {_rss_mb()[0]:.1f} MB, pymalloc {_pymalloc_mb()}"]
    lines += [f"{size / 2**20:9.2f} MiB {n:9d}  {kind}" for kind, n, size in rows[:kinds]]
    path.write_text("\n".join(lines) + "\n")


def census_every(out: str, every: float) -> Callable[[], None]:
    """Write :func:`census` to ``out.001``, ``out.002``, ... every ``every`` seconds (200 kinds each):
    a kind whose count grows from one to the next through a run is held for the run's length, a
    term that grows with the tenant. ``out.end`` is written after the run (:func:`main`)."""
    done = threading.Event()

    def sample() -> None:
        for number in itertools.count(1):
            if done.wait(every):
                return
            write_census(Path(f"{out}.{number:03d}"), f"{sys.getallocatedblocks()} Python blocks live", 200)

    return _sampler(sample, done, "census-every")


def log_memory(every: float) -> threading.Event:
    """Log the process's RSS every ``every`` seconds, beside glibc's heap (in use, and free but
    kept) and the engine's own log lines, so a peak can be placed in the run; set the returned
    event to stop."""
    done = threading.Event()
    memory_log = logging.getLogger("bench.memory")

    def sample() -> None:
        while not done.wait(every):
            now, peak = _rss_mb()
            heap = _malloc_mb()
            arenas = _pymalloc_mb()
            memory_log.info(
                "rss %.1f MB (peak %.1f MB), %d threads; malloc %s; %d Python blocks live; pymalloc %s",
                now,
                peak,
                threading.active_count(),
                f"in use {heap[0]:.1f} MB, free in its heaps {heap[1]:.1f} MB" if heap else "unknown",
                sys.getallocatedblocks(),
                f"arenas {arenas[0]:.0f} MB (most {arenas[1]:.0f} MB), in live blocks {arenas[2]:.1f} MB"
                if arenas
                else "unknown",
            )

    threading.Thread(target=sample, name="rss-sampler", daemon=True).start()
    return done


def write_report(path: str) -> None:
    """This process's own peak RSS (``VmHWM``: the high-water mark of its memory since it started).

    Not ``ru_maxrss``: Linux starts a process's ``ru_maxrss`` at the high-water mark of the memory
    it was spawned from (fork or vfork, then exec), so ``getrusage`` in the child, and ``wait4`` in
    the parent, report at least what the *parent* had resident when it started the child."""
    import resource

    now, peak = _rss_mb()
    report = {"vm_hwm_mb": round(peak, 1), "vm_rss_mb": round(now, 1)}
    report["ru_maxrss_self_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(path).write_text(json.dumps(report) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("--profile", help="write merged cProfile stats of all threads to this file")
    parser.add_argument("--tracemalloc", help="write where memory was at its peak (tracemalloc) to this file")
    parser.add_argument("--census", help="write the live objects by kind at the largest live heap to this file")
    parser.add_argument(
        "--census-every", type=float, default=0.0, help="with --census, also write one every this many seconds (0: off)"
    )
    parser.add_argument("--rss-every", type=float, default=5.0, help="log the RSS every this many seconds (0: off)")
    parser.add_argument("--report", help="write this process's own peak RSS (JSON) to this file at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The engine's INFO lines (as the Functions host records them by default) and the RSS samples.
    for name in ("shared", "bench"):
        logging.getLogger(name).setLevel(logging.INFO)
    if args.rss_every > 0:
        log_memory(args.rss_every)
    censuses: list[Callable[[], None]] = []
    if args.census:
        censuses.append(census_at_highs(args.census))
        if args.census_every > 0:
            censuses.append(census_every(args.census, args.census_every))
    try:
        if args.tracemalloc:
            traced(run_timer, args.tracemalloc)
        elif args.profile:
            profiled(run_timer, args.profile)
        else:
            run_timer()
        if args.census and args.census_every > 0:  # what the run left behind, once it let go of it
            for stop in censuses:
                stop()
            gc.collect()
            write_census(
                Path(f"{args.census}.end"), f"after the run: {sys.getallocatedblocks()} Python blocks live", 200
            )
    finally:  # a run that failed has a peak too (the bench records it with the run's outcome)
        if args.report:
            write_report(args.report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
