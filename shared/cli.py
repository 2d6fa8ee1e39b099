"""``clientcert-audit``: the command line for people (the timer uses the same engine).

Commands: ``run`` (one audit now), ``report``, ``exempt`` and ``subscriptions``, one module each
in :mod:`shared.commands`. Every exit code, with what it means, is listed once:
:class:`shared.commands.common.ExitCode`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .commands import exempt, report, run, subscriptions
from .commands.common import ExitCode
from .errors import ConfigError
from .memory import limit_malloc_arenas


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clientcert-audit",
        description="Audit incoming client certificate settings of every App Service and slot.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (run, report, exempt, subscriptions):
        command.register(sub)
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
    limit_malloc_arenas()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
