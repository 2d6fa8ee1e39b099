"""``clientcert-audit subscriptions``: the subscriptions the audit has read, and retiring one.

A subscription that an earlier run read and the subscription list no longer shows is an ERROR
row every night (see :meth:`shared.ledger.RunLedger.vanished`): a gap stays visible. When the gap is
intended (the subscription was cancelled or handed over), the security team retires it here, and
runs stop reporting it. Its last-known state rows are left as they are.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from .common import ExitCode, guarded, open_store, subscription_arg


def register(subparsers: Any) -> None:
    """Add ``subscriptions`` to the ``clientcert-audit`` command line."""
    p = subparsers.add_parser("subscriptions", help="subscriptions the audit has read; retire a vanished one")
    sub = p.add_subparsers(dest="subscriptions_command", required=True)
    ls = sub.add_parser("list", help="every subscription an audit run has read, and when it was last read")
    ls.set_defaults(func=guarded(cmd_list))
    retire = sub.add_parser("retire", help="stop reporting a subscription the audit can no longer see")
    retire.add_argument("subscription", type=subscription_arg, help="the subscription id")
    retire.set_defaults(func=guarded(cmd_retire))


def cmd_list(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        known = store.known_subscriptions()
    finally:
        store.close()
    print(f"{'subscription':<38}{'name':<30}{'last audited':<28}last run")
    for row in sorted(known.values(), key=lambda r: str(r.get("SubscriptionId", ""))):
        last = row.get("LastAuditedAt")
        when = last.isoformat() if isinstance(last, datetime) else str(last or "")
        print(
            f"{row.get('SubscriptionId', ''):<38}{_printable(str(row.get('SubscriptionName') or ''))[:28]:<30}"
            f"{when:<28}{row.get('LastRunId', '')}"
        )
    return ExitCode.OK


def cmd_retire(args: argparse.Namespace) -> int:
    store = open_store()
    try:
        forgotten = store.forget_subscription(args.subscription)
    finally:
        store.close()
    if not forgotten:
        print(f"Subscription {args.subscription} is not one the audit has read.", file=sys.stderr)
        return ExitCode.NOT_FOUND
    print(f"Retired {args.subscription}: later runs no longer report it as no longer visible.")
    return ExitCode.OK


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)
