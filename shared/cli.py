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
from typing import NoReturn

from .commands import exempt, report, run, subscriptions
from .commands.common import ExitCode
from .core.errors import ConfigError
from .core.terminal import TerminalFormatter, terminal_text
from .run.memory import limit_malloc_arenas

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Parser(argparse.ArgumentParser):
    """argparse with the documented exit code for a usage error (:attr:`ExitCode.INVALID`, not
    argparse's own 2, which ``run`` uses for a partial run); its sub-parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.INVALID, f"{self.prog}: error: {terminal_text(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="clientcert-audit",
        description="Audit incoming client certificate settings of every App Service and slot.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (run, report, exempt, subscriptions):
        command.register(sub)
    return parser


def configure_logging(verbose: bool) -> None:
    """Log lines on stderr through :class:`TerminalFormatter` (subscription names and ARM error text
    come from the estate). Without ``-v``, the credential chain's page of "unavailable" notes stays
    quiet: a failed sign-in is reported once, in one line, by the command."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("azure.identity").setLevel(logging.WARNING if verbose else logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a usage error (ExitCode.INVALID): returned, not raised
        return done.code if isinstance(done.code, int) else ExitCode.INVALID
    configure_logging(args.verbose)
    limit_malloc_arenas()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"Configuration error: {terminal_text(exc)}", file=sys.stderr)
        return ExitCode.CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
