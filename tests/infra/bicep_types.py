"""Type-check Bicep resources against Microsoft's published type definitions, as the compiler does.

The official Bicep compiler cannot run here, so this walks pycep's parse trees (written with
``tools/bicep_to_json.py --typed``, where a symbol reference is ``{"__ident__": name}`` and any
other string is a literal) and checks every resource body against the ``types.json`` copies in
tests/infra/bicep-types (origin in SOURCES.md there). It reports:

- a resource type/API version with no definition;
- a property that does not exist on the type at that API version (unless the object allows
  additional properties);
- a property that is ReadOnly (the service ignores or rejects it; Bicep reports BCP073);
- a literal of the wrong type (string/int/bool/object/array), a string literal outside the
  allowed values of a closed union, an int outside its range, a string shorter or longer
  than its bounds;
- a required property missing from an object literal.

Expressions are followed where their value is knowable: a parameter contributes its declared
type and every ``@allowed`` value, a variable its value, both branches of ``cond ? a : b`` are
checked, and a ``[for ...]`` body is checked as the array's item. Anything else (function
calls, property accessors, interpolated strings' contents) is accepted as the compiler would
accept an expression of unknown value. The format of the type files: their SOURCES.md.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.bicep_tree import unwrap

REQUIRED, READ_ONLY = 1, 2
# Keys of a resource declaration that are Bicep syntax, not part of the resource body.
BICEP_KEYS = {"parent", "scope", "dependsOn", "depends_on"}
UNKNOWN = object()  # an expression whose value the checker cannot know


@dataclass(frozen=True)
class Problem:
    file: str
    symbol: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.symbol}{self.path}: {self.message}"


@dataclass(frozen=True)
class ParamType:
    """A parameter without ``@allowed``: only its declared type is known."""

    kind: str  # string | int | bool | object | array


class TypeIndex:
    """Resource types by ``type@api-version`` (case-insensitive) over a folder of types.json files."""

    def __init__(self, folder: Path) -> None:
        self._resources: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
        for path in sorted(folder.glob("*.json")):
            nodes = json.loads(path.read_text())
            for node in nodes:
                if node.get("$type") == "ResourceType":
                    self._resources[str(node["name"]).lower()] = (nodes, node)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._resources

    def names(self) -> set[str]:
        return {str(node["name"]) for _, node in self._resources.values()}

    def body(self, type_: str, api_version: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        found = self._resources.get(f"{type_}@{api_version}".lower())
        if found is None:
            return None
        nodes, resource = found
        return nodes, deref(nodes, resource["body"])


def deref(nodes: list[dict[str, Any]], ref: dict[str, Any]) -> dict[str, Any]:
    return nodes[int(str(ref["$ref"]).removeprefix("#/"))]


def is_ident(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"__ident__"}


def is_expression(value: Any) -> bool:
    """A function call or an operator other than ``cond ? a : b`` (handled separately)."""
    if not isinstance(value, dict):
        return False
    if set(value) == {"function"} and isinstance(value["function"], dict) and "type" in value["function"]:
        return True
    return set(value) == {"operator"} and isinstance(value["operator"], dict) and "operands" in value["operator"]


def is_loop(value: Any) -> bool:
    return isinstance(value, dict) and "loop_type" in value and "config" in value


def literal_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def key_name(key: str) -> str:
    """Object keys come back as written: ``'azd-service-name'`` keeps its quotes."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def describe(nodes: list[dict[str, Any]], node: dict[str, Any], depth: int = 0) -> str:
    """A short name of a type node for messages: ``'A' | 'B'``, ``string``, ``Identity``."""
    kind = node.get("$type")
    if kind == "StringLiteralType":
        return repr(node["value"])
    if kind == "UnionType" and depth < 2:
        return " | ".join(describe(nodes, deref(nodes, e), depth + 1) for e in node["elements"])
    if kind == "ArrayType":
        return f"{describe(nodes, deref(nodes, node['itemType']), depth + 1)}[]"
    names = {"StringType": "string", "IntegerType": "int", "BooleanType": "bool", "AnyType": "any"}
    return names.get(str(kind), str(node.get("name") or kind))


class Checker:
    """Checks the resources of a set of typed pycep trees (``{path: tree}``)."""

    def __init__(self, trees: dict[str, Any], index: TypeIndex) -> None:
        self.trees = trees
        self.index = index

    # -- entry points ------------------------------------------------------------------------

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        for file, tree in sorted(self.trees.items()):
            if "__error__" in tree:
                found.append(Problem(file, "", "", f"does not parse: {tree['__error__']}"))
                continue
            for symbol, res in (tree.get("resources") or {}).items():
                found.extend(self.check_resource(file, symbol, res))
        return found

    def resources_checked(self) -> Iterator[tuple[str, str, str]]:
        for file, tree in sorted(self.trees.items()):
            for symbol, res in (tree.get("resources") or {}).items():
                yield file, symbol, f"{res['type']}@{res.get('api_version', '')}"

    def check_resource(self, file: str, symbol: str, res: dict[str, Any]) -> list[Problem]:
        type_, api = str(res["type"]), str(res.get("api_version", ""))
        found = self.index.body(type_, api)
        if found is None:
            return [Problem(file, symbol, "", f"no type definition for {type_}@{api} in the copied bicep-types")]
        if res.get("existing"):
            return []  # a reference to a resource deployed elsewhere: only its name is written
        nodes, body_type = found
        body, _, _ = unwrap(res["config"])
        body = {k: v for k, v in body.items() if k not in BICEP_KEYS}
        sink: list[Problem] = []
        self.check_value(file, symbol, "", body, nodes, body_type, sink, depth=0)
        return sink

    # -- values --------------------------------------------------------------------------------

    def resolve(self, file: str, value: Any, depth: int) -> list[Any]:
        """The possible values of ``value``: literals, ParamType, or UNKNOWN."""
        if depth > 20:
            return [UNKNOWN]
        if is_ident(value):
            name = value["__ident__"]
            tree = self.trees.get(file, {})
            params = tree.get("parameters") or {}
            variables = tree.get("variables") or {}
            if name in params:
                param = params[name]
                allowed = [d["argument"] for d in param.get("decorators", []) if d.get("type") == "allowed"]
                if allowed:
                    return list(allowed[0])
                return [ParamType(str(param.get("type", "")))]
            if name in variables:
                return self.resolve(file, variables[name]["value"], depth + 1)
            return [UNKNOWN]  # a resource, module, loop variable or built-in
        if isinstance(value, dict) and set(value) == {"operator"}:
            op = value["operator"]
            if op.get("type") == "conditional":
                operands = op["operands"]
                return [
                    *self.resolve(file, operands["true_value"], depth + 1),
                    *self.resolve(file, operands["false_value"], depth + 1),
                ]
        if is_expression(value):
            return [UNKNOWN]
        return [value]

    def check_value(
        self,
        file: str,
        symbol: str,
        path: str,
        value: Any,
        nodes: list[dict[str, Any]],
        type_node: dict[str, Any],
        sink: list[Problem],
        depth: int,
    ) -> None:
        for candidate in self.resolve(file, value, depth):
            if candidate is UNKNOWN or candidate is None:
                continue  # null leaves a property unset
            if isinstance(candidate, ParamType):
                self.check_param_type(file, symbol, path, candidate, nodes, type_node, sink)
                continue
            if is_loop(candidate):
                self.check_loop(file, symbol, path, candidate, nodes, type_node, sink, depth)
                continue
            for message in self.literal_problems(file, symbol, path, candidate, nodes, type_node, sink, depth):
                sink.append(Problem(file, symbol, path, message))

    def check_loop(
        self,
        file: str,
        symbol: str,
        path: str,
        loop: dict[str, Any],
        nodes: list[dict[str, Any]],
        type_node: dict[str, Any],
        sink: list[Problem],
        depth: int,
    ) -> None:
        target = type_node
        if target.get("$type") == "AnyType":
            return
        if target.get("$type") != "ArrayType":
            sink.append(Problem(file, symbol, path, f"a [for ...] array where {describe(nodes, target)} is expected"))
            return
        item, _, _ = unwrap(loop)
        self.check_value(file, symbol, f"{path}[*]", item, nodes, deref(nodes, target["itemType"]), sink, depth + 1)

    def check_param_type(
        self,
        file: str,
        symbol: str,
        path: str,
        param: ParamType,
        nodes: list[dict[str, Any]],
        type_node: dict[str, Any],
        sink: list[Problem],
    ) -> None:
        accepted = self.accepted_kinds(nodes, type_node)
        if param.kind in {"string", "int", "bool", "object", "array"} and accepted and param.kind not in accepted:
            expected = describe(nodes, type_node)
            sink.append(Problem(file, symbol, path, f"a {param.kind} parameter where {expected} is expected"))

    def accepted_kinds(self, nodes: list[dict[str, Any]], node: dict[str, Any]) -> set[str]:
        """Kinds of value a type node accepts; empty means any."""
        kind = node.get("$type")
        if kind == "UnionType":
            kinds: set[str] = set()
            for element in node["elements"]:
                sub = self.accepted_kinds(nodes, deref(nodes, element))
                if not sub:
                    return set()
                kinds |= sub
            return kinds
        simple = {
            "StringType": "string",
            "StringLiteralType": "string",
            "IntegerType": "int",
            "BooleanType": "bool",
            "ArrayType": "array",
            "ObjectType": "object",
            "DiscriminatedObjectType": "object",
        }
        return {simple[str(kind)]} if kind in simple else set()

    def literal_problems(
        self,
        file: str,
        symbol: str,
        path: str,
        value: Any,
        nodes: list[dict[str, Any]],
        node: dict[str, Any],
        sink: list[Problem],
        depth: int,
    ) -> list[str]:
        """Messages about ``value`` (a literal) against ``node``; nested problems go to ``sink``."""
        kind = node.get("$type")
        got = literal_kind(value)
        interpolated = isinstance(value, str) and "${" in value
        if kind == "AnyType":
            return []
        if kind == "StringType":
            if got != "string":
                return [f"{got} literal {json.dumps(value)[:60]} where string is expected"]
            if not interpolated:
                if "minLength" in node and len(value) < node["minLength"]:
                    return [f"{value!r} is shorter than {node['minLength']} characters"]
                if "maxLength" in node and len(value) > node["maxLength"]:
                    return [f"{value!r} is longer than {node['maxLength']} characters"]
            return []
        if kind == "StringLiteralType":
            if got != "string":
                return [f"{got} literal where {node['value']!r} is expected"]
            if not interpolated and value != node["value"]:
                return [f"{value!r} where {node['value']!r} is expected"]
            return []
        if kind == "IntegerType":
            if got != "int":
                return [f"{got} literal {json.dumps(value)[:60]} where int is expected"]
            if "minValue" in node and value < node["minValue"]:
                return [f"{value} is below the minimum {node['minValue']}"]
            if "maxValue" in node and value > node["maxValue"]:
                return [f"{value} is above the maximum {node['maxValue']}"]
            return []
        if kind == "BooleanType":
            return [] if got == "bool" else [f"{got} literal {json.dumps(value)[:60]} where bool is expected"]
        if kind == "ArrayType":
            if got != "array":
                return [f"{got} literal where an array ({describe(nodes, node)}) is expected"]
            item_type = deref(nodes, node["itemType"])
            for i, item in enumerate(value):
                self.check_value(file, symbol, f"{path}[{i}]", item, nodes, item_type, sink, depth + 1)
            return []
        if kind == "UnionType":
            return self.union_problems(file, symbol, path, value, nodes, node, sink, depth)
        if kind in ("ObjectType", "DiscriminatedObjectType"):
            if got != "object":
                return [f"{got} literal where an object ({describe(nodes, node)}) is expected"]
            self.check_object(file, symbol, path, value, nodes, node, sink, depth)
            return []
        return []  # ResourceFunctionType and future kinds: not a property type

    def union_problems(
        self,
        file: str,
        symbol: str,
        path: str,
        value: Any,
        nodes: list[dict[str, Any]],
        node: dict[str, Any],
        sink: list[Problem],
        depth: int,
    ) -> list[str]:
        """A literal fits a union if it fits one element; else report the closest explanation."""
        attempts: list[list[Problem]] = []
        for element in node["elements"]:
            trial: list[Problem] = []
            messages = self.literal_problems(file, symbol, path, value, nodes, deref(nodes, element), trial, depth + 1)
            trial.extend(Problem(file, symbol, path, m) for m in messages)
            if not trial:
                return []
            attempts.append(trial)
        if isinstance(value, str):
            return [f"{value!r} is not one of the allowed values {describe(nodes, node)}"]
        sink.extend(min(attempts, key=len))
        return []

    def check_object(
        self,
        file: str,
        symbol: str,
        path: str,
        value: dict[str, Any],
        nodes: list[dict[str, Any]],
        node: dict[str, Any],
        sink: list[Problem],
        depth: int,
    ) -> None:
        properties, additional = self.object_shape(file, value, nodes, node, depth)
        for raw_key, item in value.items():
            key = key_name(raw_key)
            where = f"{path}.{key}"
            prop = properties.get(key) or next((p for k, p in properties.items() if k.lower() == key.lower()), None)
            if prop is None:
                if additional is not None:
                    self.check_value(file, symbol, where, item, nodes, additional, sink, depth + 1)
                else:
                    close = difflib.get_close_matches(key, list(properties), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    owner = node.get("name") or "object"
                    sink.append(Problem(file, symbol, where, f"{owner} has no property {key!r}{hint}"))
                continue
            if int(prop.get("flags", 0)) & READ_ONLY:
                sink.append(Problem(file, symbol, where, f"{key!r} is ReadOnly: set by the service, not by templates"))
                continue
            self.check_value(file, symbol, where, item, nodes, deref(nodes, prop["type"]), sink, depth + 1)
        given = {key_name(k).lower() for k in value}
        for name, prop in properties.items():
            flags = int(prop.get("flags", 0))
            if flags & REQUIRED and not flags & READ_ONLY and name.lower() not in given:
                sink.append(Problem(file, symbol, f"{path}.{name}", "required property is missing"))

    def object_shape(
        self,
        file: str,
        value: dict[str, Any],
        nodes: list[dict[str, Any]],
        node: dict[str, Any],
        depth: int,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(properties, additionalProperties type) of an object or discriminated object type."""
        if node.get("$type") == "ObjectType":
            extra = node.get("additionalProperties")
            return dict(node.get("properties") or {}), (deref(nodes, extra) if extra else None)
        properties = dict(node.get("baseProperties") or {})
        discriminator = node["discriminator"]
        raw = next((v for k, v in value.items() if key_name(k) == discriminator), None)
        choices = [v for v in self.resolve(file, raw, depth) if isinstance(v, str)] if raw is not None else []
        elements = node.get("elements") or {}
        picked = [elements[c] for c in choices if c in elements] or list(elements.values())
        for ref in picked:
            properties.update(deref(nodes, ref).get("properties") or {})
        return properties, None


def load_typed_trees(infra_python: Path, converter: Path, files: list[str], cwd: Path) -> dict[str, Any]:
    """Typed pycep trees of ``files`` (paths relative to ``cwd``)."""
    import subprocess

    proc = subprocess.run(
        [str(infra_python), str(converter), "--typed", *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"bicep_to_json.py --typed failed (exit {proc.returncode}):\n{proc.stderr}")
    trees: dict[str, Any] = json.loads(proc.stdout)
    return trees
