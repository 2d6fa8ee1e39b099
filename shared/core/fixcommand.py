"""The ``az`` command that fixes one site or slot, chosen from what the Azure CLI really does.

Read in azure-cli 2.91.0's ``azure/cli/command_modules/appservice`` (the evidence is quoted in
docs/security-team.md, "Which az command, and why"):

* ``az webapp update`` (``custom.py``: ``update_webapp``) raises "please use 'az functionapp update'"
  when ``'function' in instance.kind``, and a ``TypeError`` when the site has no ``kind``;
* ``az functionapp update`` (``custom.py``: ``get_functionapp``) refuses a site unless
  ``'function' in kind``: Logic Apps Standard (``functionapp,workflowapp``) pass, a site without
  ``kind`` (a Flex Consumption app may have none) fails with a ``TypeError``;
* both are generic updates (GET into the SDK model, ``--set``, PUT back); with ``--ids`` of a *slot*
  they read and write the **production site**, because their ``--slot`` has no ``id_part``; with
  ``--slot`` they read and write the slot;
* ``az resource patch --ids`` PATCHes exactly the id it is given with only the properties named,
  whatever the ``kind``.

So: ``az functionapp update`` when ``'function' in kind`` (the CLI's own test, case and all),
``az webapp update`` for any other ``kind``, and ``az resource patch --ids`` for a site without
``kind``. Every option is written ``--option=value``, so no name can be read as an option (a resource
group ``-rg`` is legal in ARM); ``--slot=`` names a slot, never ``--ids``. Values given to ``--set``
are what ``shell_safe_json_parse`` reads back as the intended type: ``true``, ``Required``, and
exclusion paths as a JSON string (a path like ``null`` or ``[1]`` stays a string).

Pure: plain data in, argument lists out (quoted for bash by :func:`shlex.join` by the caller).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .models import SiteRecord

#: The properties a client-certificate fix may set, and nothing else (the fix script refuses others).
FIX_PROPERTIES: tuple[str, ...] = ("clientCertEnabled", "clientCertMode", "clientCertExclusionPaths", "httpsOnly")
#: ``az resource patch`` needs an api-version; the one azure-mgmt-web 11 (azure-cli 2.91, and the audit) uses.
PATCH_API_VERSION = "2025-05-01"
COMMAND_GROUPS: tuple[str, ...] = ("webapp", "functionapp", "resource")
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_LITERALS = frozenset({"true", "false", "null", "True", "False", "None"})

FixValue = bool | str


def command_group(kind: str) -> str:
    """``functionapp``, ``webapp`` or ``resource`` for a site of this ``kind`` (see the module docstring)."""
    if not kind:
        return "resource"
    return "functionapp" if "function" in kind else "webapp"


def _set_value(value: FixValue) -> str:
    """A ``--set`` value that azure-cli reads back as exactly ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if _PLAIN.match(value) and value not in _LITERALS:
        return value
    return json.dumps(value, ensure_ascii=False)


def fix_command(target: SiteRecord, properties: Mapping[str, FixValue]) -> list[str]:
    """The ``az`` arguments that set ``properties`` on exactly ``target`` (its id, group, name, slot,
    subscription and ``kind`` are what the command needs)."""
    unknown = set(properties) - set(FIX_PROPERTIES)
    if unknown:
        raise ValueError(f"not a client certificate property: {sorted(unknown)}")
    group = command_group(target.kind)
    if group == "resource":
        body = json.dumps(dict(properties), ensure_ascii=False)
        return [
            "az",
            "resource",
            "patch",
            f"--ids={target.resource_id}",
            f"--api-version={PATCH_API_VERSION}",
            f"--properties={body}",
        ]
    args = ["az", group, "update", f"--resource-group={target.resource_group}", f"--name={target.app_name}"]
    if target.slot:
        args.append(f"--slot={target.slot}")
    if target.subscription_id:
        args.append(f"--subscription={target.subscription_id}")
    return [*args, "--set", *(f"{name}={_set_value(value)}" for name, value in properties.items())]


# -- reading a command back (the fix script re-checks what a row recorded) -------------------------
@dataclass(frozen=True)
class ParsedFix:
    """A fix command read back: its group, its target options and the properties it sets."""

    group: str
    options: Mapping[str, str]
    properties: Mapping[str, FixValue]


def _cli_value(raw: str) -> object:
    """What azure-cli's ``--set`` makes of ``raw``: JSON, else a Python literal, else the string."""
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw


def _options(tokens: Sequence[str]) -> tuple[dict[str, str], list[str]] | None:
    """``--option=value`` and ``--option value`` pairs, and the values of ``--set``; ``None`` when an
    option repeats or has no value."""
    options: dict[str, str] = {}
    sets: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            return None
        name, has_value, value = token.partition("=")
        if name == "--set" and not has_value:
            i += 1
            while i < len(tokens) and not tokens[i].startswith("--"):
                sets.append(tokens[i])
                i += 1
            continue
        if not has_value:
            if i + 1 >= len(tokens):
                return None
            value, i = tokens[i + 1], i + 1
        if name in options:
            return None
        options[name] = value
        i += 1
    return options, sets


def _typed(properties: Mapping[str, object]) -> dict[str, FixValue] | None:
    """The properties when each is a fix property of the right type, else ``None``."""
    out: dict[str, FixValue] = {}
    for name, value in properties.items():
        if name not in FIX_PROPERTIES:
            return None
        wants_bool = name in ("clientCertEnabled", "httpsOnly")
        if wants_bool != isinstance(value, bool) or not isinstance(value, bool | str):
            return None
        out[name] = value
    return out


def parse_fix_command(tokens: Sequence[str]) -> ParsedFix | None:
    """Read back a command :func:`fix_command` wrote (or the older ``--name X`` form); ``None`` for
    anything else, including a property that is not a client certificate property."""
    if len(tokens) < 4 or tokens[0] != "az":
        return None
    group, verb = tokens[1], tokens[2]
    if (group, verb) not in (("webapp", "update"), ("functionapp", "update"), ("resource", "patch")):
        return None
    parsed = _options(tokens[3:])
    if parsed is None:
        return None
    options, sets = parsed
    raw: dict[str, object] = {}
    if group == "resource":
        try:
            body = json.loads(options.pop("--properties", ""))
        except ValueError:
            return None
        if not isinstance(body, dict) or sets:
            return None
        raw = body
    else:
        for expression in sets:
            name, has_value, value = expression.partition("=")
            if not has_value or name in raw:
                return None
            raw[name] = _cli_value(value)
    properties = _typed(raw)
    if not properties:
        return None
    return ParsedFix(group, options, properties)
