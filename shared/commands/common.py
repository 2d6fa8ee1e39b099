"""What every ``clientcert-audit`` command shares: the exit codes, the store, the output stream.

The security team's commands read the same settings as the audit (``AUDIT_TABLE_SERVICE_URI``
with the signed-in identity, or ``AUDIT_TABLE_CONNECTION_STRING`` locally).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import IO

from azure.core.exceptions import AzureError, ClientAuthenticationError

from ..config import load_settings
from ..errors import one_line
from ..identity import build_credential
from ..ids import subscription_id
from ..store import TableStore


class ExitCode(IntEnum):
    """Every exit code of ``clientcert-audit``, one member per meaning (the one list to document).

    ======  ==================  ====================================================================
    code    member              meaning
    ======  ==================  ====================================================================
    0       ``OK``              done: ``run`` complete, ``report`` found no FAIL, ``exempt`` and
                                ``subscriptions`` did what was asked
    1       ``FAILED``          ``run``: the audit failed (nothing trustworthy was recorded)
    1       ``FAIL_FOUND``      ``report``: the selection contains FAIL (a ``--diff``: a change into
                                FAIL), usable as a pipeline gate
    1       ``NOT_FOUND``       ``exempt remove`` / ``subscriptions retire``: no such exemption or
                                subscription, nothing changed
    2       ``PARTIAL``         ``run``: finished with ERROR rows (a subscription or scope unreadable)
    3       ``BUSY``            ``run``: another run holds the lease; not started
    4       ``CONFIG``          any command: a setting is missing or malformed
    4       ``INVALID``         ``report``: options that do not go together; ``exempt add``: the
                                exemption is refused (the message says which rule)
    5       ``NO_DATA``         ``report``: nothing to report (no run yet, or an unknown run id)
    6       ``STORE``           ``report``, ``exempt``, ``subscriptions``: the tables cannot be read
                                or written (not signed in, no role, unreachable)
    7       ``BLIND``           ``run``: the run read no subscription (Outcome ``blind``: no role
                                granted yet, or every subscription unreadable): not a pass;
                                ``report``: the run reported (or one of them) is such a run and the
                                selection has no FAIL
    ======  ==================  ====================================================================

    Members that share a number keep the numbers the command line has always returned, which
    scripts and pipelines rely on; in Python they are aliases (``ExitCode.FAIL_FOUND is
    ExitCode.FAILED``), so compare values, not names. Usage errors that argparse reports itself
    (an unknown option, a malformed ``--subscription``) exit 2, as every argparse program does.
    """

    OK = 0
    FAILED = 1
    FAIL_FOUND = 1
    NOT_FOUND = 1
    PARTIAL = 2
    BUSY = 3
    CONFIG = 4
    INVALID = 4
    NO_DATA = 5
    STORE = 6
    BLIND = 7


Command = Callable[[argparse.Namespace], int]


def guarded(command: Command) -> Command:
    """Turn a store error into one actionable line and :attr:`ExitCode.STORE`, instead of an SDK traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AzureError as exc:
            print(f"Cannot use the results tables: {store_error_hint(exc)}", file=sys.stderr)
            return ExitCode.STORE

    return run


def store_error_hint(exc: AzureError) -> str:
    """What went wrong with the tables, and what the analyst can do about it."""
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return f"no signed-in identity ({type(exc).__name__}); sign in with `az login` first."
    status = getattr(exc, "status_code", None)
    if status in (401, 403) or isinstance(exc, ClientAuthenticationError):
        return (
            f"access denied ({status} {getattr(exc, 'error_code', '') or ''}). Reading needs the "
            "Storage Table Data Reader role on the results account; `exempt add/remove` also needs "
            "Storage Table Data Contributor on the exemptions table (see README.md, 'For the security team')."
        )
    return one_line(exc, 300 + len(type(exc).__name__) + 2)


def open_store() -> TableStore:
    """The results store with the audit's own settings and identity."""
    settings = load_settings()
    credential = None if settings.table_connection_string else build_credential(settings.client_id)
    return TableStore(settings, credential)


@contextlib.contextmanager
def output(path: str | None) -> Iterator[IO[str]]:
    """The stream to write to: stdout for no path or ``-``, else the file (UTF-8, newlines as written)."""
    if not path or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:  # noqa: PTH123 - a plain text stream
        yield handle


def silence_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def subscription_arg(value: str) -> str:
    """``--subscription`` and ``subscriptions retire``'s argument: a subscription id, in lower case."""
    try:
        return subscription_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
