"""The ARM emulator in its own process, so its CPU is not counted as the audit's.

Started by the benchmark as ``python -m bench.armproc --spec JSON``. Prints one JSON line when
serving (``url`` and the environment a product process needs), then answers commands read line
by line on stdin with one JSON line each: ``stats``, ``reset``, ``quit``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from typing import Any

from bench.shapes import build_shape
from tests.emulators.arm import ArmEmulator, ThrottleModel
from tests.emulators.tenant import Tenant
from tests.emulators.tls import TlsMaterial


def build_tenant(spec: dict[str, Any]) -> Tenant:
    """The benchmark tenant: deterministic for a spec, so the parent can rebuild the same one."""
    return build_shape(
        str(spec.get("spread", "heavy")),
        int(spec["seed"]),
        subscriptions=int(spec["subscriptions"]),
        sites=int(spec["sites"]),
        slot_share=float(spec["slot_share"]),
    )


def tls_from(directory: str) -> TlsMaterial:
    base = Path(directory)
    return TlsMaterial(ca_file=base / "ca.pem", cert_file=base / "server.pem", key_file=base / "server-key.pem")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.armproc")
    parser.add_argument("--spec", required=True, help="JSON: seed, subscriptions, sites, slot_share, latency, ...")
    spec = json.loads(parser.parse_args(argv).spec)
    tenant = build_tenant(spec)
    throttle = ThrottleModel(
        capacity=float(spec["throttle_capacity"]), refill_per_second=float(spec["throttle_refill"])
    )
    emulator = ArmEmulator(
        tenant,
        tls_from(spec["tls_dir"]),
        page_size=int(spec["page_size"]),
        latency=float(spec["latency"]),
        throttle=throttle if spec.get("throttle", True) else False,
        request_log_size=16,
        site_shape=str(spec.get("site_shape", "full")),
    ).start()
    try:
        print(json.dumps({"url": emulator.url, "env": emulator.env(), "counts": tenant.counts()}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                out = {**emulator.stats(), "cpu_seconds": usage.ru_utime + usage.ru_stime}
                print(json.dumps(out), flush=True)
            elif command == "reset":  # counters zeroed and read budgets full: a new, measured run
                emulator.reset_stats()
                emulator.refill_quotas()
                print("{}", flush=True)
            elif command == "quit":
                break
            else:
                print(json.dumps({"error": f"unknown command {command!r}"}), flush=True)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
