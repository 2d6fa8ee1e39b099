"""Helpers over pycep-parser's JSON trees (see tools/bicep_to_json.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    file: str
    symbol: str
    type: str
    api_version: str
    existing: bool
    conditional: bool
    looped: bool
    body: dict[str, Any]

    @property
    def properties(self) -> dict[str, Any]:
        props = self.body.get("properties", {})
        return props if isinstance(props, dict) else {}


def unwrap(config: dict[str, Any]) -> tuple[dict[str, Any], bool, bool]:
    """Strip pycep's ``if (...)`` / ``for ...`` wrappers: (body, conditional, looped)."""
    conditional = looped = False
    while isinstance(config, dict) and "config" in config and ("condition" in config or "loop_type" in config):
        conditional = conditional or config.get("condition") is not None
        looped = looped or "loop_type" in config
        config = config["config"]
    return config, conditional, looped


def resources(trees: dict[str, Any]) -> Iterator[Resource]:
    for file, tree in sorted(trees.items()):
        for symbol, res in (tree.get("resources") or {}).items():
            body, conditional, looped = unwrap(res["config"])
            yield Resource(
                file=file,
                symbol=symbol,
                type=res["type"],
                api_version=res.get("api_version", ""),
                existing=bool(res.get("existing")),
                conditional=conditional,
                looped=looped,
                body=body,
            )


def deployed(trees: dict[str, Any], type_: str) -> list[Resource]:
    """Resources of ``type_`` that a template creates (not ``existing`` references)."""
    return [r for r in resources(trees) if r.type.lower() == type_.lower() and not r.existing]


def module_params(trees: dict[str, Any], file: str, symbol: str) -> dict[str, Any]:
    body, _, _ = unwrap(trees[file]["modules"][symbol]["config"])
    params: dict[str, Any] = body["params"]
    return params


def function_call(node: Any) -> tuple[str, list[Any]] | None:
    """``guid(a, b, c)`` -> ("guid", [a, b, c]); anything else -> None."""
    if isinstance(node, dict) and "function" in node:
        fn = node["function"]
        return fn["type"], list((fn.get("parameters") or {}).values())
    return None


def accessor(node: Any) -> str | None:
    """``a.b.c`` -> "a.b.c"; a plain identifier -> itself; else None."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        ops = node["operator"]["operands"]
        left, right = accessor(ops["operand_1"]), accessor(ops["operand_2"])
        return f"{left}.{right}" if left and right else None
    if isinstance(node, dict) and "function" in node and node["function"].get("property_name"):
        return f"{node['function']['type']}().{node['function']['property_name']}"
    return None
