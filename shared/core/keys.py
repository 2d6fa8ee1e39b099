"""Safe, stable Table Storage keys derived from ARM resource ids.

Table keys forbid ``/ \\ # ?`` and control characters; ARM ids are full of ``/`` and resource
groups may hold unicode, ``.``, ``(`` and ``)``. Keys are built from the id *folded as ARM compares
names* (:func:`shared.core.names.fold`: ASCII letters lower-cased, any other letter to its simple
uppercase), so the same resource keeps the same key whatever casing an API returned it in, and two
resources ARM keeps apart never share one. An ASCII id's key is its lower-cased id, as it always was;
an id with other letters was keyed by ``lower()`` before, and :func:`lookup_keys` still finds it.
"""

from __future__ import annotations

import hashlib
import re

from .names import fold, spellings

_FORBIDDEN = set("/\\#?%|'")
# Azurite caps keys at 512 characters (Azure at 1 KiB); leave room for a hash suffix.
MAX_KEY_CHARS = 400


# Everything _escape_char changes other than "/": the forbidden characters and control characters.
_NEEDS_ESCAPE = re.compile("[" + re.escape("".join(sorted(_FORBIDDEN - {"/"}))) + "\x00-\x1f\x7f-\x9f]")


def _escape_char(ch: str) -> str:
    if ch == "/":
        return "|"
    code = ord(ch)
    if ch in _FORBIDDEN or code < 0x20 or 0x7F <= code <= 0x9F:
        return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
    return ch


def encode_key(value: str) -> str:
    """Encode any string as a valid, readable Table key (``/`` becomes ``|``).

    Distinct inputs give distinct keys (the escape is reversible). Over-long values are cut and
    suffixed with a hash of the whole value, which keeps them distinct in practice.
    """
    if _NEEDS_ESCAPE.search(value) is None:  # the usual id: only "/" to replace (a char loop is ~30 µs)
        encoded = value.replace("/", "|")
    else:
        encoded = "".join(_escape_char(ch) for ch in value)
    if len(encoded) > MAX_KEY_CHARS:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]
        encoded = f"{encoded[: MAX_KEY_CHARS - 18]}~{digest}"
    return encoded


def resource_key(resource_id: str) -> str:
    """RowKey for a resource: ARM-equal ids share it, safe, stable across runs."""
    return encode_key(fold(resource_id.strip()).rstrip("/"))


#: A slot's key has these segments (``|subscriptions|s|resourcegroups|g|providers|microsoft.web|sites|a|slots|b``).
_SLOT_SEGMENTS = 11


def site_key(key: str) -> str:
    """The key of the site a slot's key names (read by position: any name may equal a path keyword,
    and no name holds a ``|``, escaped by :func:`encode_key`); any other key is its own.

    A slot and its site are compared together where a slot needs its site (its owner): the
    slices of a large subscription are cut by this key (``run/spill.py``)."""
    parts = key.split("|", _SLOT_SEGMENTS)
    if len(parts) == _SLOT_SEGMENTS and parts[1] == "subscriptions" and parts[7] == "sites" and parts[9] == "slots":
        return "|".join(parts[:9])
    return key


def legacy_key(resource_id: str) -> str:
    """The RowKey an older version gave this spelling of the id (``lower()``, not ARM's rule)."""
    return encode_key(resource_id.strip().lower().rstrip("/"))


def lookup_keys(resource_id: str) -> set[str]:
    """Every RowKey a row of this resource may be stored under: its key, and the keys older versions
    gave its ARM-equal spellings (only ids with non-ASCII letters have any)."""
    keys = {resource_key(resource_id)}
    if not resource_id.isascii():
        keys.update(legacy_key(spelling) for spelling in spellings(resource_id.strip()))
    return keys


def odata_quote(value: str) -> str:
    """Quote a string literal for an OData ``$filter`` (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"
