"""``clientcert-audit run``: one audit now, the same engine the nightly timer runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..core.config import load_settings
from ..core.errors import AuditFailed, RunInProgressError
from ..core.models import Status
from ..core.terminal import terminal_text
from ..run.audit import RunSummary, run_audit
from .common import ExitCode


def register(subparsers: Any) -> None:
    """Add ``run`` to the ``clientcert-audit`` command line."""
    run = subparsers.add_parser("run", help="run the audit once now and print a summary")
    run.add_argument("--json", action="store_true", help="print the RunSummary event as JSON")
    run.set_defaults(func=cmd_run)


def format_summary(summary: RunSummary) -> str:
    """A short, readable per-status summary of one run."""
    total = sum(summary.counts.values())
    lines = [
        f"Run {summary.run_id}: {summary.outcome}"
        + (" (baseline: nothing counts as new on the first run)" if summary.baseline else "")
        + (" (resumed)" if summary.resumed else ""),
        f"  {'status':<8}{'count':>8}",
    ]
    for status in Status:
        lines.append(f"  {status.value:<8}{summary.counts.get(status.value, 0):>8}")
    lines += [
        f"  {'total':<8}{total:>8}",
        f"New failures: {summary.new_failures}",
        f"Subscriptions read: {summary.subscriptions_read}, unreadable: {summary.subscriptions_failed}",
        f"Rows written: {summary.rows} in {summary.transactions} transactions; gone: {summary.retired}",
        f"Duration: {summary.duration_seconds:.1f}s",
    ]
    if summary.blind:
        lines.append(
            "Not a pass: the run could read no subscription. Its ERROR rows say why, and which role to grant where."
        )
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        summary = run_audit(settings)
    except RunInProgressError as exc:
        print(f"Not started: {terminal_text(exc)}", file=sys.stderr)
        return ExitCode.BUSY
    except AuditFailed as exc:
        print(f"Audit failed: {terminal_text(exc)}", file=sys.stderr)
        return ExitCode.FAILED
    print(json.dumps(summary.event(), indent=2) if args.json else format_summary(summary))
    if summary.blind:
        return ExitCode.BLIND
    return ExitCode.PARTIAL if summary.partial else ExitCode.OK
