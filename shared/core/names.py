"""The one comparison rule for ARM names and ids: how Azure Resource Manager compares them.

ARM names are case-insensitive ("Always perform a case-insensitive comparison of names":
https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules), and
Microsoft's own resource id type compares ids with ``StringComparison.OrdinalIgnoreCase``
(``Azure.Core.ResourceIdentifier.Equals``, sdk/core/Azure.Core/src/ResourceIdentifier.cs in
Azure/azure-sdk-for-net). ``OrdinalIgnoreCase`` is neither Python's ``lower()`` nor ``casefold()``:
.NET maps each UTF-16 unit to its *simple* uppercase (one character to one character: ICU's
``u_toupper``, see ``GlobalizationNative_InitOrdinalCasingPage`` in dotnet/runtime) and compares
the results ordinally, except that U+0131 (dotless ı) and U+017F (long ſ) keep themselves ("Disable
Turkish I behavior on Ordinal operations"). So, as ARM sees them:

* ``µ`` (micro sign), ``μ`` and ``Μ`` are one name (all map to ``Μ``); final ``ς``, ``σ`` and ``Σ``
  are one name; but ``lower()`` keeps ``µ`` apart from ``μ``;
* ``K`` (U+212A KELVIN SIGN) is its own uppercase, so it is *not* ``k``/``K``, although ``lower()``
  and ``casefold()`` both make it ``k``; likewise ``Å`` (U+212B) and ``Ω`` (U+2126);
* ``ß`` is not ``SS`` (no full case mapping), nor ``ẞ``; ``ı`` is not ``i`` or ``I``; ``İ`` is not ``i``.

:func:`fold` gives every name one spelling per ARM-equal class, so equal keys mean ARM-equal names:
each character is mapped to its simple uppercase, as .NET does, and then to lower case, except for
six letters whose lower case belongs to another letter (U+212A ``K``, U+212B ``Å``, U+2126 ``Ω``,
U+03F4 ``ϴ``, U+1E9E ``ẞ``, U+0130 ``İ``), which keep themselves. The fold of an ASCII id is exactly
its ``lower()`` (every stored key of an ordinary id stays byte for byte what it was), and it differs
from ``lower()`` on 27 non-ASCII characters only (``µ`` folds to ``μ``, final ``ς`` to ``σ``, the six
above stay, ...). No ASCII character is ARM-equal to a non-ASCII one (the only simple uppercase
mappings into ASCII are ı and ſ, which .NET disables), so the two never meet.

Pure functions only. Keys (``keys.py``), de-duplication, exemptions, change fingerprints and group
matching all go through :func:`fold`; nothing else in the engine case-folds a name or an id.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

#: Characters whose simple uppercase .NET's ordinal casing refuses (they would map into ASCII).
_KEPT = frozenset("\u0131\u017f")
#: Letters that are their own simple uppercase but whose lower case is another letter's (``K`` lowers
#: to ``k``, whose uppercase is ``K``): lower-casing them would merge names ARM keeps apart.
ODD_UPPERCASE = frozenset("\u212a\u212b\u2126\u03f4\u1e9e\u0130")


@functools.lru_cache(maxsize=4096)
def _upper_char(ch: str) -> str:
    """One non-ASCII character's simple uppercase mapping, as .NET's ordinal casing has it."""
    if ch in _KEPT:
        return ch
    upper = ch.upper()
    if len(upper) == 1:
        return upper
    # The full mapping expands (ß -> SS, ᾳ -> ΑΙ); the simple one is then the single-character
    # titlecase where there is one (ᾳ -> ᾼ, as UnicodeData lists), else the character itself.
    title = ch.title()
    return title if len(title) == 1 else ch


@functools.lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """One non-ASCII character folded: its simple uppercase, then lower case (odd letters excepted)."""
    upper = _upper_char(ch)
    if upper in ODD_UPPERCASE:
        return upper
    lower = upper.lower()
    return lower if len(lower) == 1 else upper


def fold(text: str) -> str:
    """``text`` in the one spelling ARM-equal names share (see the module docstring). Text already
    in that spelling (a subscription id, as ARM lists it) is returned as it is, not copied: the run
    keeps folded ids of every subscription, and a copy each doubled them."""
    if text.isascii():
        folded = text.lower()
        return text if folded == text else folded
    return "".join(ch.lower() if ch < "\x80" else _fold_char(ch) for ch in text)


def ordinal_upper(text: str) -> str:
    """``text`` as .NET's ``ToUpperInvariant``-for-ordinal sees it: the form ``OrdinalIgnoreCase``
    compares (every character to its simple uppercase; ı and ſ kept). ``fold`` agrees with it:
    ``fold(a) == fold(b)`` exactly when ``ordinal_upper(a) == ordinal_upper(b)``."""
    return "".join(ch.upper() if ch < "\x80" else _upper_char(ch) for ch in text)


def same(a: str, b: str) -> bool:
    """Whether ARM takes ``a`` and ``b`` for the same name or id."""
    return fold(a) == fold(b)


def starts_with(text: str, prefix: str) -> bool:
    """``text`` begins with ``prefix``, compared as ARM compares (the fold keeps lengths)."""
    return fold(text).startswith(fold(prefix))


# -- spellings an older version keyed with lower() -----------------------------------------------------
#: Every character with a case mapping lies below this (the BMP and the SMP; tests check it).
CASED_PLANES_END = 0x20000
#: Legacy spellings tried per id at most (a name of many non-ASCII letters has many casings).
MAX_SPELLINGS = 64


@functools.cache
def _classes() -> dict[str, tuple[str, ...]]:
    """Every non-ASCII character ARM takes for another, by folded form (computed once, on the first
    non-ASCII id that needs it: a pass over the planes that hold cased letters, about 0.1 s)."""
    members: dict[str, list[str]] = {}
    for code in range(0x80, CASED_PLANES_END):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        upper = _upper_char(ch)
        if upper != ch:
            members.setdefault(upper, [upper]).append(ch)
    return {folded: tuple(chars) for folded, chars in members.items()}


def spellings(text: str) -> Iterator[str]:
    """Spellings of ``text`` that ARM takes for it, one per distinct ``lower()`` (what an older
    version keyed rows by): ``text`` itself first, at most :data:`MAX_SPELLINGS`."""
    yield text
    if text.isascii():
        return
    options: list[tuple[str, ...]] = []
    classes = _classes()
    for ch in text:
        if ch < "\x80":
            options.append((ch,))
            continue
        same_class = classes.get(_upper_char(ch), (ch,))
        by_lower: dict[str, str] = {}
        for member in (ch, *same_class):
            by_lower.setdefault(member.lower(), member)
        options.append(tuple(by_lower.values()))
    seen = {text.lower()}
    count = 1
    for combination in _product(options):
        if count >= MAX_SPELLINGS:
            return
        candidate = "".join(combination)
        if candidate.lower() not in seen:
            seen.add(candidate.lower())
            count += 1
            yield candidate


def _product(options: list[tuple[str, ...]]) -> Iterator[tuple[str, ...]]:
    """The cartesian product, lazily (the options are few; their product may not be)."""
    if not options:
        yield ()
        return
    head, rest = options[0], options[1:]
    for choice in head:
        for tail in _product(rest):
            yield (choice, *tail)
