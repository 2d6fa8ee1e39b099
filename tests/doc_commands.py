"""The shell commands of the docs, read from their fenced ``bash`` blocks, so a test and the page it
checks cannot drift apart.

A block whose first line is a comment starting with ``# In Azure`` needs a real tenant: its commands
are not run here, but every ``az`` command in it is checked against the real CLI's ``--help``
(:mod:`tests.integration.test_docs_az`). The other blocks of docs/security-team.md run against the
demo (:mod:`tests.integration.test_security_team_doc`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AZURE_MARK = "# In Azure"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
_SHELL_KEYWORDS = {"do", "then", "else", "done", "fi", "time", "!"}


@dataclass(frozen=True)
class Block:
    """One fenced bash block: the ``## `` section it is in, and its command lines (continuations joined)."""

    doc: str
    section: str
    azure: bool
    lines: tuple[str, ...]


def bash_blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        if match.group(1) != "bash":
            continue
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.M)
        body = match.group(2)
        first = body.lstrip().splitlines()[0] if body.strip() else ""
        joined = body.replace("\\\n", " ")
        lines = tuple(line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#"))
        blocks.append(
            Block(
                str(path.relative_to(REPO)),
                headings[-1] if headings else "",
                first.startswith(AZURE_MARK),
                lines,
            )
        )
    return blocks


def _substitutions(line: str) -> tuple[str, list[str]]:
    """``line`` with every ``$( ... )`` replaced by one word, and the commands inside them."""
    inner: list[str] = []
    out, i = [], 0
    while i < len(line):
        if line.startswith("$(", i):
            depth, j = 1, i + 2
            while j < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[j], 0)
                j += 1
            body = line[i + 2 : j - 1]
            rest, nested = _substitutions(body)
            inner += [rest, *nested]
            out.append("SUBSTITUTED")
            i = j
        else:
            out.append(line[i])
            i += 1
    return "".join(out), inner


def simple_commands(line: str) -> list[list[str]]:
    """Every simple command of a shell line (pipes, ``&&``, ``;``, ``$( )`` and ``for ...; do`` taken
    apart) as its words, comments dropped, quotes removed as the shell would."""
    outer, inner = _substitutions(line)
    commands: list[list[str]] = []
    for text in [outer, *inner]:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in lexer:
            if token in _OPERATORS:
                if current:
                    commands.append(current)
                current = []
                continue
            if not current and token in _SHELL_KEYWORDS:
                continue
            current.append(token)
        if current:
            commands.append(current)
    return [c for c in commands if not (len(c) == 1 and "=" in c[0])]


def az_commands(lines: tuple[str, ...] | list[str]) -> list[list[str]]:
    """The ``az`` commands among these lines (words after ``az``), environment assignments skipped."""
    found = []
    for line in lines:
        for words in simple_commands(line):
            while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                words = words[1:]
            if words and words[0] == "az":
                found.append(words[1:])
    return found


def az_command_and_options(words: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """``(command words, options used)`` of an ``az`` command's words (after ``az``)."""
    command: list[str] = []
    for word in words:
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break
        command.append(word)
    options = [w.split("=", 1)[0] for w in words[len(command) :] if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", w)]
    return tuple(command), options


def quote(word: str) -> str:
    return shlex.quote(word)


def inline_az_commands(path: Path) -> list[list[str]]:
    """``az`` commands written inline in the prose (`` `az ...` ``), outside the fenced blocks;
    optional parts in ``[...]`` are taken as written."""
    prose = _FENCE.sub("", path.read_text(encoding="utf-8"))
    spans = re.findall(r"`([^`]*\baz [^`]+)`", prose)
    return az_commands([span.replace("[", "").replace("]", "") for span in spans])
