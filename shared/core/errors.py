"""Every exception the engine raises on purpose, with what each one means.

Errors that describe *data* (an unreadable scope) are not exceptions but records
(``models.InventoryError``): a gap becomes an ERROR row, never a stopped run. The errors of
an answer from ARM or Resource Graph that cannot be trusted are azure-core's ``AzureError``s, so
they are in ``arm_errors.py``, beside the adapters (this module imports no SDK).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


class ExemptionError(ValueError):
    """An exemption that would be invalid; the message says which rule it breaks."""


class NoDataError(LookupError):
    """Nothing to report: no run recorded yet, or the requested run does not exist."""


class ArmIdError(ValueError):
    """A resource id (or its ``type``) is not that of an App Service site or deployment slot."""


class AuditFailed(RuntimeError):
    """The run could not audit (or could not record) anything trustworthy."""


class StoreError(RuntimeError):
    """The results store rejected a write that the run cannot do without."""


class RunInProgressError(RuntimeError):
    """Another run holds the lease; running now would race it. ``holder_kind`` says which kind of
    run holds it (``nightly`` or ``changes``), when known."""

    def __init__(self, message: str, holder_kind: str = "") -> None:
        super().__init__(message)
        self.holder_kind = holder_kind


class LeaseLost(RuntimeError):
    """This run no longer holds the audit lease: it must not write anything more."""


class WriteConflict(RuntimeError):
    """A conditional write found its row changed since it was read (another writer), or already
    there when it was to be created: the transaction was rolled back whole."""


def one_line(exc: BaseException, limit: int = 2000) -> str:
    """``Type: first line of the message``, cut to ``limit``: how an error is named in a row, a
    log line or a run record (never a traceback, never a multi-line SDK dump)."""
    text = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:limit]
