"""``clientcert-audit subscriptions``: the subscriptions the audit has read, and retiring one.

A subscription that an earlier run read and the subscription list no longer shows is an ERROR
row every night (see :meth:`shared.run.ledger.RunLedger.vanished`): a gap stays visible. When the gap is
intended (the subscription was cancelled or handed over), the security team retires it here, and
runs stop reporting it. Its last-known state rows are left as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from ..core.terminal import columns, terminal_text
from ..core.when import as_utc
from ..report import plain, text, write_rows_csv
from .common import ExitCode, UnknownSubscription, guarded, open_store, resolve_subscription, subscription_arg

#: ``subscriptions list --format csv|json``: one record per subscription the audit has read.
LIST_COLUMNS = ("SubscriptionId", "SubscriptionName", "TenantId", "FirstAuditedAt", "LastAuditedAt", "LastRunId")


def register(subparsers: Any) -> None:
    """Add ``subscriptions`` to the ``clientcert-audit`` command line."""
    p = subparsers.add_parser("subscriptions", help="subscriptions the audit has read; retire a vanished one")
    sub = p.add_subparsers(dest="subscriptions_command", required=True)
    ls = sub.add_parser("list", help="every subscription an audit run has read, and when it was last read")
    ls.add_argument("--format", choices=("table", "csv", "json"), default="table")
    ls.set_defaults(func=guarded(cmd_list))
    retire = sub.add_parser("retire", help="stop reporting a subscription the audit can no longer see")
    retire.add_argument(
        "subscription", type=subscription_arg, help="the subscription: its id, its name, or the start of either"
    )
    retire.set_defaults(func=guarded(cmd_retire))


def _record(row: Mapping[str, Any]) -> dict[str, Any]:
    return {column: plain(row.get(column)) for column in LIST_COLUMNS}


def _when(value: Any) -> str:
    at = as_utc(value) if value is not None else None
    return f"{at:%Y-%m-%d %H:%M} UTC" if at is not None else text(value)


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        known = store.known_subscriptions()
    finally:
        store.close()
    rows = sorted(known.values(), key=lambda r: str(r.get("SubscriptionId", "")).lower())
    if args.format == "json":
        print(json.dumps([_record(r) for r in rows], indent=2))
    elif args.format == "csv":
        write_rows_csv([_record(r) for r in rows], sys.stdout, LIST_COLUMNS)
    elif not rows:
        print("No subscription has been read yet: the first run records them.")
    else:
        cells = [
            [r.get("SubscriptionId"), r.get("SubscriptionName"), _when(r.get("LastAuditedAt")), r.get("LastRunId")]
            for r in rows
        ]
        print("\n".join(columns(("subscription", "name", "last audited", "last run"), cells)))
    return ExitCode.OK


def cmd_retire(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        try:
            subscription = resolve_subscription(args.subscription, store.known_subscriptions())
        except UnknownSubscription as exc:
            print(terminal_text(exc), file=sys.stderr)
            return ExitCode.NOT_FOUND
        forgotten = store.forget_subscription(subscription)
    finally:
        store.close()
    if not forgotten:
        print(f"Subscription {subscription} is not one the audit has read.", file=sys.stderr)
        return ExitCode.NOT_FOUND
    print(f"Retired {subscription}: later runs no longer report it as no longer visible.")
    return ExitCode.OK
