"""The one comparison rule for names and ids (``shared/core/names.py``): ARM's, .NET's ``OrdinalIgnoreCase``.

Property tests on the pairs where Python's ``lower()``, ``casefold()`` and ``upper()`` disagree with
ARM (``µ``/``Μ``, ``K``/U+212A, ``ß``/``SS``, ``ı``/``I``, final ``ς``), checked against the rule's
definition (:func:`shared.core.names.ordinal_upper`, each character to its simple uppercase), and that
definition against an independent source of Unicode's simple case mapping: Java's
``Character.toUpperCase(int)`` (UnicodeData.txt), when a JDK is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.core.keys import legacy_key, lookup_keys, resource_key
from shared.core.names import CASED_PLANES_END, ODD_UPPERCASE, fold, ordinal_upper, same, spellings, starts_with

PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, database=None)

#: Characters on which lower(), casefold(), upper() and ARM disagree, and their ARM-equal partners.
TRICKY = "µμΜKkK\u212aßẞSsıIiİςσΣÅå\u212bΩω\u2126θΘϑϴſ\u0345ιᾳᾼẛṡṠ"
TEXT = st.text(st.sampled_from(TRICKY + "abcXYZ-_.()0"), max_size=12)
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


def test_the_pairs_the_issue_names() -> None:
    # one name as ARM sees them
    assert same("rg-µsvc", "RG-ΜSVC") and same("rg-µsvc", "rg-μsvc") and same("rg-µsvc", "rg-µSVC")
    assert "rg-µsvc".lower() != "RG-ΜSVC".lower(), "lower() splits them"
    assert same("ς", "σ") and same("ς", "Σ")
    # two names as ARM sees them
    assert not same("rg-kiosk", "rg-\u212aiosk") and not same("rg-Kiosk", "rg-\u212aiosk")
    assert "rg-\u212aiosk".lower() == "rg-kiosk" == "rg-\u212aiosk".casefold(), "lower() and casefold() merge them"
    assert not same("ß", "SS") and not same("ß", "ss") and not same("ß", "ẞ")
    assert "ß".upper() == "SS" and "ß".casefold() == "ss", "upper() and casefold() merge them"
    assert not same("ı", "I") and not same("ı", "i") and not same("İ", "i") and not same("İ", "I")
    assert not same("\u212b", "Å") and not same("\u2126", "Ω") and not same("ϴ", "Θ")
    assert same("Å", "å") and same("Ω", "ω") and same("Θ", "θ") and same("ϑ", "θ")


@PROPERTY
@given(a=TEXT, b=TEXT)
@example(a="µ", b="Μ")
@example(a="\u212a", b="k")
@example(a="ß", b="SS")
@example(a="ı", b="I")
@example(a="ς", b="Σ")
def test_fold_is_exactly_ordinal_ignore_case(a: str, b: str) -> None:
    assert (fold(a) == fold(b)) == (ordinal_upper(a) == ordinal_upper(b)) == same(a, b)


@PROPERTY
@given(text=ANY_TEXT)
def test_fold_is_a_spelling_of_its_own_class(text: str) -> None:
    folded = fold(text)
    assert fold(folded) == folded and same(folded, text)
    assert len(folded) == len(text), "one character for one: keys and prefixes keep their lengths"
    assert ordinal_upper(folded) == ordinal_upper(text)


@PROPERTY
@given(text=st.text(st.characters(max_codepoint=0x7F), max_size=40))
def test_ascii_folds_exactly_as_lower_did(text: str) -> None:
    assert fold(text) == text.lower()
    rid = f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/{text or 'x'}"
    assert resource_key(rid) == legacy_key(rid), "an ASCII id keeps its stored key byte for byte"
    assert lookup_keys(rid) == {resource_key(rid)}


def test_an_ascii_id_already_folded_is_kept_not_copied() -> None:
    """The run keeps every subscription's id, and its folded id in several maps: one string, not two."""
    sub = "".join(["3c56612f-dc1a-4ea1-a1fe-", "b7c06a5aa9cc"])  # built at run time, as a listing's are
    assert fold(sub) is sub
    mixed = "".join(["3C56612F-dc1a-4ea1-a1fe-", "b7c06a5aa9cc"])
    assert fold(mixed) == sub and fold(mixed) is not mixed


@PROPERTY
@given(text=TEXT, prefix_len=st.integers(min_value=0, max_value=12))
def test_prefixes_are_compared_by_the_same_rule(text: str, prefix_len: int) -> None:
    prefix = text[:prefix_len]
    respelled = ordinal_upper(prefix)
    assert starts_with(text, respelled)


def test_every_character_of_every_plane() -> None:
    """The rule's invariants over all of Unicode: no non-ASCII character folds into ASCII (so an
    ASCII id's key never changes), the odd letters are exactly those whose lower case is another
    letter's, nothing past :data:`CASED_PLANES_END` changes, and fold disagrees with ``lower()``
    on a handful of characters only."""
    odd = set()
    differs = []
    uncased = [
        chr(c) for c in range(CASED_PLANES_END, 0x110000) if chr(c).upper() != chr(c) or chr(c).lower() != chr(c)
    ]
    assert not uncased, "a cased character past CASED_PLANES_END"
    for code in range(0x80, CASED_PLANES_END):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        folded = fold(ch)
        assert not folded.isascii(), hex(code)
        upper = ordinal_upper(ch)
        if upper == ch and upper.lower() != ch and len(upper.lower()) == 1 and ordinal_upper(upper.lower()) != ch:
            odd.add(ch)
        if folded != ch.lower():
            differs.append(ch)
    odd.add("\u0130")  # İ: its lower case is two characters (i + dot); its simple lowercase is i
    assert odd == set(ODD_UPPERCASE)
    assert len(differs) == 27, differs


@pytest.mark.skipif(shutil.which("java") is None, reason="no JDK: Java's UnicodeData table is the cross-check")
def test_simple_uppercase_agrees_with_javas_unicode_data(tmp_path: Path) -> None:
    """``Character.toUpperCase(int)`` is UnicodeData.txt's simple uppercase, the table ICU's
    ``u_toupper`` (and so .NET's ordinal casing) uses; .NET alone keeps ı and ſ."""
    source = tmp_path / "Upper.java"
    source.write_text(
        "public class Upper { public static void main(String[] a) { StringBuilder b = new StringBuilder();"
        " for (int c = 0x80; c < 0x110000; c++) { if (c >= 0xD800 && c <= 0xDFFF || !Character.isDefined(c))"
        " continue; b.append(Integer.toHexString(c)).append(' ').append(Integer.toHexString(Character.toUpperCase(c)))"
        ".append('\\n'); } System.out.print(b); } }"
    )
    out = subprocess.run(["java", str(source)], capture_output=True, text=True, timeout=120, check=True).stdout
    checked = 0
    for line in out.splitlines():
        code, upper = (int(x, 16) for x in line.split())
        ch = chr(code)
        if unicodedata.category(ch) == "Cn":  # assigned in Java's Unicode, not in Python's
            continue
        expected = ch if ch in "ıſ" else chr(upper)
        assert ordinal_upper(ch) == expected, (hex(code), hex(upper))
        checked += 1
    assert checked > 100_000


def test_spellings_reach_every_key_an_older_version_used() -> None:
    rid = "/subscriptions/s/resourceGroups/rg-µsvc/providers/Microsoft.Web/sites/app"
    # lower() kept the micro sign apart from mu: the two spellings had two keys, one resource has one now
    old_keys = {legacy_key(rid), legacy_key(rid.replace("µ", "Μ"))}
    assert len(old_keys) == 2
    assert old_keys <= lookup_keys(rid) and old_keys <= lookup_keys(rid.upper())
    assert resource_key(rid) == resource_key(rid.replace("µ", "Μ")) == resource_key(rid.upper())
    assert list(spellings("abc")) == ["abc"]
