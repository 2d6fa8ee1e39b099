"""Run the emulated Azure by hand: ``python -m tests.emulators --seed 1 --dir .demo``.

Starts the ARM + managed-identity emulator on a generated tenant (and, with ``--azurite``, Azurite),
prints ``export`` lines for the environment a product process needs, and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from pathlib import Path

from .arm import ArmEmulator
from .azurite import Azurite
from .tenant import generate_tenant
from .tls import make_tls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--subscriptions", type=int, default=5)
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--slot-share", type=float, default=0.3)
    parser.add_argument("--disabled-subscriptions", type=int, default=0)
    parser.add_argument("--deleted-subscriptions", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--throttle", action="store_true", help="enable the ARM-like 429 model")
    parser.add_argument("--azurite", action="store_true", help="also start Azurite (Table, HTTPS, OAuth)")
    parser.add_argument("--dir", type=Path, default=Path(".demo"), help="where TLS files and Azurite data go")
    args = parser.parse_args(argv)

    workdir = args.dir.resolve()
    tls = make_tls(workdir / "tls")
    tenant = generate_tenant(
        args.seed,
        args.subscriptions,
        args.sites,
        args.slot_share,
        disabled_subscriptions=args.disabled_subscriptions,
        deleted_subscriptions=args.deleted_subscriptions,
    )
    emulator = ArmEmulator(tenant, tls, page_size=args.page_size, latency=args.latency, throttle=args.throttle).start()
    azurite = Azurite(workdir / "azurite", tls).start() if args.azurite else None
    try:
        env = emulator.env()
        if azurite is not None:
            env.update(azurite.env())
        counts = tenant.counts()
        print(f"# tenant {tenant.tenant_id}: {counts}")
        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
        print("# Ctrl-C to stop", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
    finally:
        emulator.stop()
        if azurite is not None:
            azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
