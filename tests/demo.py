"""``./demo``: the real audit against an emulated tenant on this machine, no Azure needed.

Every command starts the ARM + managed-identity emulator on the demo tenant (:mod:`tests.demo_tenant`)
and uses Azurite (HTTPS, OAuth) with its data in ``.demo/`` (``DEMO_DIR`` to move it), then runs
``clientcert-audit`` with the arguments given, untouched, exactly as in Azure: managed identity token
→ ARM → Table Storage. Its exit code is the command's. What the demo itself says goes to stderr, so
stdout carries only the command's output (``./demo report --format json | jq .summary`` works).

    ./demo                        # the next night's audit (the first, then the second, which differs)
    ./demo report [options]       # any clientcert-audit command: report, exempt, subscriptions, run
    ./demo change [NAME]          # an app owner changes a setting; the change poll audits it at once
    ./demo serve                  # keep the demo's Azurite up on a fixed port, for az and Storage Explorer
    ./demo reset                  # forget the demo (deletes .demo/)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.demo_tenant import (
    CHANGES,
    EXEMPTION_REQUEST_TAG,
    LEGACY,
    SANDBOX,
    SHARED,
    apply_change,
    apply_night,
    build_tenant,
)
from tests.emulators.arm import ArmEmulator
from tests.emulators.azurite import ACCOUNT_KEY, ACCOUNT_NAME, Azurite
from tests.emulators.tenant import Tenant
from tests.emulators.tls import TlsMaterial, make_tls

REPO = Path(__file__).resolve().parent.parent
#: The fixed port ``./demo serve`` keeps Azurite on (Azurite's own default for tables).
SERVE_PORT = 10002
#: The settings every demo command runs with (anything AUDIT_* from the caller's shell is dropped,
#: so a real environment's settings never point the demo at a real account).
DEMO_SETTINGS = {"AUDIT_EXEMPTION_REQUEST_TAG": EXEMPTION_REQUEST_TAG}
SEEDED_EXEMPTION = [
    "exempt",
    "add",
    "--scope",
    f"/subscriptions/{SHARED}/resourceGroups/rg-monitoring/providers/Microsoft.Web/sites/status-page",
    "--reason",
    "Customers must reach the status page during an incident. Ticket SEC-1190",
    "--approver",
    "carol@contoso.com",
    "--expires",
    "10d",
]


def demo_dir() -> Path:
    return Path(os.environ.get("DEMO_DIR") or REPO / ".demo").resolve()


def say(text: str = "") -> None:
    """The demo's own words: on stderr, so stdout stays the command's."""
    print(text, file=sys.stderr, flush=True)


# -- what the demo remembers between commands -----------------------------------------------------


def load_state(directory: Path) -> dict[str, Any]:
    """``{"night": nights run so far, "changes": [change names applied, in order]}``."""
    try:
        data = json.loads((directory / "demo.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return {"night": int(data.get("night", 0)), "changes": [str(c) for c in data.get("changes", [])]}


def save_state(directory: Path, state: dict[str, Any]) -> None:
    (directory / "demo.json").write_text(json.dumps(state), encoding="utf-8")


def tenant_for(night: int, changes: list[str]) -> Tenant:
    """The tenant as it is on ``night``, with the owners' changes made so far."""
    tenant = build_tenant()
    apply_night(tenant, night)
    for name in changes:
        apply_change(tenant, name)
    return tenant


def tls_material(directory: Path) -> TlsMaterial:
    """The demo's CA and server certificate, made once and kept (a served Azurite and the
    commands that use it must trust the same CA)."""
    tls = directory / "tls"
    existing = TlsMaterial(tls / "ca.pem", tls / "server.pem", tls / "server-key.pem")
    if all(p.is_file() for p in (existing.ca_file, existing.cert_file, existing.key_file)):
        return existing
    return make_tls(tls)


# -- Azurite: our own for one command, or the one `./demo serve` keeps up ------------------------------


def served(directory: Path) -> dict[str, Any] | None:
    """The Azurite ``./demo serve`` runs for this demo directory, if it is up."""
    try:
        info = json.loads((directory / "serve.json").read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
        ctx = ssl.create_default_context(cafile=str(directory / "tls" / "ca.pem"))
        with (
            socket.create_connection(("127.0.0.1", int(info["port"])), timeout=2) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return dict(info)
    except (OSError, ValueError, KeyError, ssl.SSLError):
        return None


@contextlib.contextmanager
def table_service(directory: Path, tls: TlsMaterial) -> Iterator[str]:
    """The table service URI for one command: the served Azurite, or one started for the command."""
    info = served(directory)
    if info is not None:
        yield str(info["uri"])
        return
    with Azurite(directory / "azurite", tls, in_memory=False) as azurite:
        yield azurite.table_service_uri


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """One demo command at a time per demo directory (they share Azurite's files)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def emulated_azure(directory: Path, tenant: Tenant) -> Iterator[ArmEmulator]:
    """ARM, the managed identity and Table Storage for one command, in this process's environment."""
    tls = tls_material(directory)
    with table_service(directory, tls) as uri, ArmEmulator(tenant, tls) as arm:
        arm.faults.forbid_subscription(SANDBOX)
        for name in [n for n in os.environ if n.startswith("AUDIT_")] + ["AZURE_CLIENT_ID"]:
            os.environ.pop(name, None)
        os.environ.update(arm.env())
        os.environ.update(DEMO_SETTINGS)
        os.environ["AUDIT_TABLE_SERVICE_URI"] = uri
        yield arm


# -- commands -------------------------------------------------------------------------------------------


def cli(argv: list[str]) -> int:
    from shared.cli import main as cli_main

    try:
        return cli_main(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), as the command itself exits
        return exc.code if isinstance(exc.code, int) else 1


def run_night(directory: Path, argv: list[str]) -> int:
    """``./demo run``: the next night's audit (night 1, then night 2 and after, which differ)."""
    state = load_state(directory)
    night = state["night"] + 1
    tenant = tenant_for(night, state["changes"])
    counts = tenant.counts()
    say(
        f"Demo night {night}: {counts['subscriptions']} subscriptions (Sandbox is one the auditor may not read), "
        f"{counts['sites']} apps and {counts['slots']} slots."
    )
    for line in apply_night(build_tenant(), night) if night == 2 else []:
        say(f"  since the first night: {line}")
    with emulated_azure(directory, tenant):
        if night == 1 and "--help" not in argv and "-h" not in argv:
            with contextlib.redirect_stdout(sys.stderr):
                cli(SEEDED_EXEMPTION)  # one exemption that expires soon, for the report's list
        code = cli(argv)
    if code in (0, 2) and not {"-h", "--help"} & set(argv):
        state["night"] = night
        save_state(directory, state)
        say()
        if night == 1:
            say("Next: ./demo report             the first night as a table (exit 1: it lists FAIL rows)")
            say("      ./demo                    the second night: apps break, one is fixed, Legacy vanishes")
        else:
            say("Next: ./demo report --new       tonight's new failures")
            say("      ./demo change             an owner changes a setting; the change poll audits it at once")
            say("      ./demo subscriptions list and retire the vanished Legacy subscription")
            say(f"      (Legacy's id: {LEGACY})")
        say("See docs/security-team.md for every command.")
    return code


def change(directory: Path, argv: list[str]) -> int:
    """``./demo change [NAME]``: an owner changes one app; the change poll re-audits it right away."""
    from shared.core.config import load_settings
    from shared.core.errors import RunInProgressError
    from shared.run.changes import poll_changes

    if argv and argv[0] in ("-h", "--help"):
        print("usage: ./demo change [NAME]\n\nNAME (default blog-allow), one of:")
        for c in CHANGES.values():
            print(f"  {c.name:<14} {c.description}")
        return 0
    name = argv[0] if argv else next(iter(CHANGES))
    if name not in CHANGES:
        say(f"unknown change {name!r}; one of: {', '.join(CHANGES)}")
        return 4
    state = load_state(directory)
    if state["night"] < 1:
        say("Run the first night first: ./demo")
        return 5
    tenant = tenant_for(max(1, state["night"]), state["changes"])
    tenant.start_change_log()
    with emulated_azure(directory, tenant):
        say(f"Change: {apply_change(tenant, name)} (at {datetime.now(UTC):%H:%M:%S} UTC).")
        try:
            result = poll_changes(load_settings())
        except RunInProgressError as exc:
            say(f"Not started: {exc}")
            return 3
    state["changes"].append(name)
    save_state(directory, state)
    run = result.summary
    print(
        f"Change poll since {result.since:%Y-%m-%d %H:%M:%S} UTC: {result.changes} change(s) to {result.resources} resource(s)"
    )
    if run is None:
        print("No run needed: nothing changed that an earlier poll had not audited.")
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items()) if v)
    print(f"Change run {run.run_id}: {run.outcome}; {counts}; new failures: {run.new_failures}")
    say(f"\nNext: ./demo report --run {run.run_id}     the change run's rows")
    say("      ./demo report --since 24h          every run since yesterday, change runs included")
    return 0


def serve(directory: Path, argv: list[str]) -> int:
    """``./demo serve``: keep the demo's Azurite up on a fixed port until Ctrl-C."""
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: ./demo serve\n\nKeeps the demo's Azurite on 127.0.0.1:{SERVE_PORT} (DEMO_TABLE_PORT to change).")
        return 0
    if served(directory) is not None:
        say(f"Already served (see {directory / 'serve.json'}).")
        return 3
    port = int(os.environ.get("DEMO_TABLE_PORT") or SERVE_PORT)
    with exclusive(directory):
        tls = tls_material(directory)
        azurite = Azurite(directory / "azurite", tls, in_memory=False, port=port).start()
    try:
        uri = azurite.table_service_uri
        info = {"pid": os.getpid(), "port": port, "uri": uri}
        (directory / "serve.json").write_text(json.dumps(info), encoding="utf-8")
        print(served_instructions(uri, tls.ca_file), flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(1.0):
            if not azurite.running:
                say("Azurite stopped.")
                return 1
    finally:
        with contextlib.suppress(OSError):
            (directory / "serve.json").unlink()
        azurite.stop()
    return 0


def connection_string(uri: str) -> str:
    """Azurite's well-known development account (public, documented by Microsoft; demo only)."""
    return f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};TableEndpoint={uri};"


def az_query_line(ca_file: Path) -> str:
    """The ``az storage entity query`` that lists the demo's runs (tests run it with the real CLI)."""
    return (
        f"REQUESTS_CA_BUNDLE={ca_file} az storage entity query --table-name ClientCertAuditRuns "
        "--filter \"PartitionKey eq 'run'\" -o table "
        '--query "items[].{RunId: RowKey, Kind: Kind, Outcome: Outcome, FAIL: CountFAIL, New: NewFailures}"'
    )


def served_instructions(uri: str, ca_file: Path) -> str:
    return "\n".join(
        [
            f"The demo's Table Storage (Azurite) is served at {uri} until Ctrl-C.",
            "Other ./demo commands use it while it runs.",
            "",
            f"CA certificate (trust it in your client): {ca_file}",
            "Connection string (Azurite's well-known development key):",
            f"  {connection_string(uri)}",
            "",
            "Azure CLI, in another terminal:",
            f"  export AZURE_STORAGE_CONNECTION_STRING='{connection_string(uri)}'",
            f"  {az_query_line(ca_file)}",
            "",
            "Azure Storage Explorer: Edit > SSL Certificates > Import Certificates (the CA above), then",
            "Connect > Storage account or service > Connection string (the one above).",
        ]
    )


def reset(directory: Path) -> int:
    if served(directory) is not None:
        say("Stop ./demo serve first.")
        return 3
    shutil.rmtree(directory, ignore_errors=True)
    say(f"Removed {directory}; ./demo starts from the first night again.")
    return 0


def usage() -> str:
    return (__doc__ or "").split("\n\n", 2)[2].rstrip() + (
        "\n\nAny other command is clientcert-audit's (./demo report --help). Exit codes are the command's."
    )


def main(argv: list[str]) -> int:
    directory = demo_dir()
    args = argv or ["run"]
    command = args[0]
    if command in ("-h", "--help", "help"):
        print(usage())
        return 0
    if command == "serve":
        return serve(directory, args[1:])
    if command == "reset":
        return reset(directory)
    with exclusive(directory):
        if command == "change":
            return change(directory, args[1:])
        if command == "run":
            return run_night(directory, args)
        state = load_state(directory)
        with emulated_azure(directory, tenant_for(max(1, state["night"]), state["changes"])):
            return cli(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
