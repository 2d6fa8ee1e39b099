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
from collections.abc import Callable, Iterator, Mapping
from enum import IntEnum
from typing import IO, Any

from azure.core.exceptions import AzureError, ClientAuthenticationError

from ..azure.identity import build_credential
from ..azure.store import TableStore
from ..core.config import load_settings
from ..core.errors import one_line
from ..core.ids import subscription_id
from ..core.names import fold
from ..core.terminal import terminal_text


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
    4       ``INVALID``         any command: a usage error (an unknown option, a malformed value,
                                options that do not go together, a ``--subscription`` that names
                                no or several subscriptions); ``exempt add``: the exemption is
                                refused (the message says which rule)
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
    exit ``INVALID`` too (:class:`shared.cli.Parser`), not argparse's usual 2: 2 is ``run``'s partial
    run. docs/security-team.md lists the same table ("Exit codes"; a test keeps the two equal).
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
            print(f"Cannot use the results tables: {terminal_text(store_error_hint(exc))}", file=sys.stderr)
            return ExitCode.STORE

    return run


def store_error_hint(exc: AzureError) -> str:
    """What went wrong with the tables, and what the analyst can do about it."""
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return "not signed in. Sign in with `az login` (the commands use your Azure CLI sign-in), then run this again."
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
    """``--subscription`` and ``subscriptions retire``'s argument: a subscription id (in lower case),
    or a name or the start of one, resolved against the subscriptions the audit has read by
    :func:`resolve_subscription` once the tables are open."""
    value = value.strip()
    if not value:
        raise argparse.ArgumentTypeError("expected a subscription id, a subscription name or the start of one")
    try:
        return subscription_id(value)
    except ValueError:
        return value


class UnknownSubscription(LookupError):
    """``--subscription`` names no subscription the audit has read, or more than one."""


def _label(row: Mapping[str, Any]) -> str:
    name = str(row.get("SubscriptionName") or "")
    sub = str(row.get("SubscriptionId") or row.get("RowKey") or "")
    return f"{name} ({sub})" if name else sub


def resolve_subscription(value: str, known: Mapping[str, Mapping[str, Any]]) -> str:
    """The id ``value`` names among ``known`` (the subscription registry, by lower-cased id): an id
    as it is; else the subscription whose name is ``value`` (case-insensitive); else the only one
    whose name or id starts with it (``Prod``, or ``d7a7a3cc`` as the report's labels show ids).
    :class:`UnknownSubscription` says which ones match when none or several do."""
    try:
        return subscription_id(value)
    except ValueError:
        pass
    wanted = fold(value.strip())  # ARM's rule for names (shared.core.names), as everywhere else
    rows = list(known.values())
    exact = [r for r in rows if fold(str(r.get("SubscriptionName") or "")) == wanted]
    found = exact or [
        r
        for r in rows
        if fold(str(r.get("SubscriptionName") or "")).startswith(wanted)
        or fold(str(r.get("SubscriptionId") or "")).startswith(wanted)
    ]
    ids = sorted({str(r.get("SubscriptionId") or "").lower() for r in found})
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise UnknownSubscription(
            f"No subscription the audit has read is named or starts with {value!r} "
            "(`clientcert-audit subscriptions list` shows them); give its name, the start of it, or its id."
        )
    shown = ", ".join(sorted({_label(r) for r in found})[:10])
    raise UnknownSubscription(
        f"{value!r} matches {len(ids)} subscriptions ({shown}): give more of the name, or the id."
    )
