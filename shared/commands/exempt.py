"""``clientcert-audit exempt add|list|remove``: the security team's exemptions.

:mod:`shared.azure.exemptions` validates and stores them; this module reads the options and prints.
Exit codes (:class:`~.common.ExitCode`): ``OK``, ``NOT_FOUND`` (nothing to remove), ``INVALID``
(an exemption refused: the message says which rule), ``STORE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from ..azure.exemptions import (
    EXPIRING_SOON_DAYS,
    BrokenExemption,
    Exemption,
    add_exemption,
    current_user,
    in_force,
    load_exemption_rows,
    new_exemption,
    parse_expiry,
    remove_exemption,
)
from ..core.errors import ExemptionError
from ..core.terminal import terminal_text
from ..report import broken_exemption_view, exemption_view, write_rows_csv
from .common import ExitCode, guarded, open_store

LIST_COLUMNS = ("scope", "state", "expiresAt", "reason", "approver", "createdAt", "recordedBy", "problem")


def register(subparsers: Any) -> None:
    """Add ``exempt`` to the ``clientcert-audit`` command line."""
    p = subparsers.add_parser(
        "exempt",
        help="manage exemptions (security team only; every exemption expires)",
        description="Exemptions live in the exemptions table, never in resource tags. An exempted FAIL or "
        "WARN reports EXEMPT until the expiry, then its real status again (a FAIL then alerts as new).",
    )
    sub = p.add_subparsers(dest="exempt_command", required=True)
    add = sub.add_parser("add", help="exempt a site, slot, resource group or subscription until a date")
    add.add_argument("--scope", required=True, help="/subscriptions/<id>[/resourceGroups/<rg>[/providers/...]]")
    add.add_argument("--reason", required=True, help="why requiring client certificates does not apply")
    add.add_argument("--approver", required=True, help="who on the security team accepted the risk")
    add.add_argument(
        "--expires", required=True, help="2026-06-30, 2026-06-30T18:00Z or 30d/12h/2w (at most 365 days away)"
    )
    add.set_defaults(func=guarded(cmd_add))
    lst = sub.add_parser("list", help="list exemptions (valid ones; --all adds expired)")
    lst.add_argument("--all", action="store_true", help="include expired exemptions")
    lst.add_argument("--format", choices=("table", "csv", "json"), default="table")
    lst.set_defaults(func=guarded(cmd_list))
    rm = sub.add_parser("remove", help="remove the exemption of exactly this scope")
    rm.add_argument("scope")
    rm.set_defaults(func=guarded(cmd_remove))


def cmd_add(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    try:
        exemption = new_exemption(
            args.scope, args.reason, args.approver, parse_expiry(args.expires, now), now, recorded_by=current_user()
        )
    except ExemptionError as exc:
        print(f"Exemption refused: {terminal_text(exc)}", file=sys.stderr)
        return ExitCode.INVALID
    store = open_store()
    try:
        replaced = add_exemption(store, exemption)
    finally:
        store.close()
    if isinstance(replaced, BrokenExemption):
        print(
            f"Replaced a broken exemption row of {terminal_text(replaced.scope)} ({terminal_text(replaced.problem)})."
        )
    elif replaced:
        print(
            f"Replaced the exemption of {terminal_text(replaced.scope)} (was until {replaced.expires:%Y-%m-%d %H:%M} UTC)."
        )
    print(
        f"Exempted {terminal_text(exemption.scope)} until {exemption.expires:%Y-%m-%d %H:%M} UTC "
        f"({terminal_text(exemption.reason)}; approved by {terminal_text(exemption.approver)}). "
        "It takes effect on the next run."
    )
    return ExitCode.OK


def cmd_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    store = open_store()
    try:
        rows = load_exemption_rows(store)
    finally:
        store.close()
    found = in_force(rows.valid, now, include_expired=args.all)
    # A broken row exempts nothing, but someone meant it to: it is always listed, until fixed or removed.
    views = [{**exemption_view(e), "state": _state(e, now)} for e in found]
    views += [broken_exemption_view(b) for b in rows.broken]
    if args.format == "json":
        print(json.dumps(views, indent=2))
    elif args.format == "csv":
        write_rows_csv(views, sys.stdout, LIST_COLUMNS)
    elif not views:
        print("No exemptions" + ("." if args.all else " in force (--all shows expired ones)."))
    else:
        for view, e in zip(views[: len(found)], found, strict=True):  # printed without control characters
            print(f"{view['state']:<14} until {e.expires:%Y-%m-%d %H:%M} UTC  {terminal_text(e.scope)}")
            reason, approver = terminal_text(e.reason), terminal_text(e.approver)
            print(f"{'':14} {reason} (approved by {approver}, added {e.created:%Y-%m-%d})")
        for b in rows.broken:
            print(f"{'broken':<14} exempts nothing  {terminal_text(b.scope)}")
            print(f"{'':14} {terminal_text(b.problem)} (row {terminal_text(b.row)}: fix it, or `exempt remove` it)")
    return ExitCode.OK


def _state(exemption: Exemption, now: datetime) -> str:
    if exemption.expires <= now:
        return "expired"
    if exemption.expires <= now + timedelta(days=EXPIRING_SOON_DAYS):
        return "expiring-soon"
    return "active" if exemption.active(now) else "not-yet-valid"


def cmd_remove(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        removed = remove_exemption(store, args.scope)
    finally:
        store.close()
    if removed is None:
        print(
            f"No exemption for exactly {terminal_text(args.scope)} (scopes are not matched as prefixes here).",
            file=sys.stderr,
        )
        return ExitCode.NOT_FOUND
    what = "broken exemption row" if isinstance(removed, BrokenExemption) else "exemption"
    print(f"Removed the {what} of {terminal_text(removed.scope)}; from the next run it reports its real status.")
    return ExitCode.OK
