"""``clientcert-audit``: the command line for people (the timer uses the same engine).

Exit codes: 0 complete, 1 failed, 2 partial (ERROR rows), 3 another run in progress,
4 bad settings. ``report`` exits 1 when its selection contains FAIL.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from . import report_cli, subscriptions_cli
from .audit import RunSummary, run_audit
from .config import load_settings
from .errors import AuditFailed, ConfigError, RunInProgressError
from .models import Status

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL, EXIT_BUSY, EXIT_CONFIG = 0, 1, 2, 3, 4


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
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        summary = run_audit(settings)
    except RunInProgressError as exc:
        print(f"Not started: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except AuditFailed as exc:
        print(f"Audit failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(summary.event(), indent=2) if args.json else format_summary(summary))
    return EXIT_PARTIAL if summary.partial else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clientcert-audit",
        description="Audit incoming client certificate settings of every App Service and slot.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the audit once now and print a summary")
    run.add_argument("--json", action="store_true", help="print the RunSummary event as JSON")
    run.set_defaults(func=_cmd_run)
    report_cli.register(sub)
    subscriptions_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
