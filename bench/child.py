"""The audit under measurement: the timer function, invoked as the Functions worker does.

Run by the benchmark as ``python -m bench.child [--profile FILE]`` with the audit's settings in
the environment; the parent reads this process's CPU time and peak RSS with ``wait4``. With
``--profile``, every thread runs under cProfile and the merged stats are dumped to FILE.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import threading
from typing import Any


def run_timer() -> None:
    import uuid

    from azure.functions.timer import TimerRequest

    import function_app
    from tests.harness import WORKER_THREAD_LOCAL, WorkerContext

    functions = function_app.app.get_functions()
    invocation_id = str(uuid.uuid4())
    WORKER_THREAD_LOCAL.invocation_id = invocation_id  # as the worker does, on the invoking thread
    functions[0].get_user_function()(TimerRequest(past_due=False), context=WorkerContext(invocation_id, "clientcert_audit"))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("--profile", help="write merged cProfile stats of all threads to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.profile:
        profiled(run_timer, args.profile)
    else:
        run_timer()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
