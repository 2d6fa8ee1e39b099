"""``make demo``: the real audit against an emulated tenant on this machine, no Azure needed.

Starts the ARM + managed-identity emulator (a generated tenant with every kind of app, slots,
odd names and one subscription the identity may not read) and Azurite (HTTPS, OAuth), then runs
``clientcert-audit`` with the given arguments (default: ``run``) exactly as in Azure: managed
identity token → ARM → Table Storage. Azurite keeps its data in ``.demo/``, so later demo calls
see earlier runs:

    make demo                                   # run the audit, print the summary
    make demo ARGS="report"                     # the latest run as a table
    make demo ARGS="report --format html --output .demo/report.html"
    make demo ARGS="exempt add --scope /subscriptions/... --reason ... --approver ... --expires 2027-01-31"
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from shared.cli import main as cli_main
from tests.emulators.arm import ArmEmulator
from tests.emulators.azurite import Azurite
from tests.emulators.tenant import generate_tenant
from tests.emulators.tls import make_tls

DEMO_DIR = Path(__file__).resolve().parent.parent / ".demo"
NO_ACCESS_SUBSCRIPTION = "99999999-9999-4999-8999-999999999999"


def main(argv: list[str]) -> int:
    args = argv or ["run"]
    tls = make_tls(DEMO_DIR / "tls")
    tenant = generate_tenant(seed=2026, subscriptions=5, sites=120, slot_share=0.35, disabled_subscriptions=1)
    no_access = tenant.add_subscription(NO_ACCESS_SUBSCRIPTION, display_name="sandbox (no access)")
    no_access.add_site("rg-sandbox", "hidden-app")
    with Azurite(DEMO_DIR / "azurite", tls, in_memory=False) as azurite, ArmEmulator(tenant, tls) as arm:
        arm.faults.forbid_subscription(NO_ACCESS_SUBSCRIPTION)
        os.environ.update(arm.env())
        os.environ.update(azurite.env())
        os.environ.pop("AUDIT_TABLE_CONNECTION_STRING", None)
        if args[0] == "run":
            counts = tenant.counts()
            print(
                f"Emulated tenant: {len(tenant.subscriptions)} subscriptions "
                f"(one disabled, one without access), {counts}\n"
                f"ARM emulator {arm.url}, Azurite {azurite.table_service_uri}\n",
                flush=True,
            )
        code = cli_main(args)
    if args[0] == "run":
        print("\nNext: make demo ARGS=report   (or --format html|csv|json; see docs/security-team.md)")
        return 0 if code == 2 else code  # partial is expected here: one subscription has no access
    if args[0] == "report" and code == 1:
        print("(report exit code 1: the selection contains FAIL, as a pipeline would check)", file=sys.stderr)
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
