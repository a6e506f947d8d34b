"""Tools in each model's format (pure): what goes into ``agent["configuration"]["tools"]``.

A server's tool is a :class:`ToolSpec` (its name, description and input JSON Schema, as
listed); :func:`export` turns specs into the shape the provider's API takes, by
``llm_name``. Gemini refuses several JSON Schema keywords, so its schemas go through
:func:`gemini_schema` first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from ..exceptions import MCPProtocolError


class ToolSpec(NamedTuple):
    """One tool as a server lists it (``name`` is the name the model sees)."""

    name: str
    description: str
    input_schema: dict[str, Any]


def _gpt(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.input_schema,
    }


def _claude(tool: ToolSpec) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}


def _gemini(tool: ToolSpec) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "parameters": gemini_schema(tool.input_schema),
    }


def _ollama(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.input_schema,
        },
    }


def _travrse(tool: ToolSpec) -> dict[str, Any]:
    return {
        "name": tool.name,
        "description": tool.description,
        "tool_type": "external",
        "parameters_schema": tool.input_schema,
    }


_FORMATS: dict[str, Callable[[ToolSpec], dict[str, Any]]] = {
    "gpt": _gpt,
    "openai": _gpt,
    "claude": _claude,
    "gemini": _gemini,
    "ollama": _ollama,
    "travrse": _travrse,
}

#: The ``agent["llm"]["llm_name"]`` values that get tools.
LLM_NAMES = frozenset(_FORMATS)


def export(llm_name: str, tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """``tools`` in ``llm_name``'s format. Raises ``KeyError`` for a name not in LLM_NAMES."""
    shape = _FORMATS[llm_name]
    return [shape(tool) for tool in tools]


def native_entry(name: str, base_url: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The entry a provider that calls MCP servers itself takes (``mcp_llm_native``)."""
    return {
        "type": "mcp",
        "server_label": name,
        "server_url": base_url,
        "headers": dict(headers),
        "require_approval": "never",
    }


# -- Gemini's schema subset ------------------------------------------------------------------
# Gemini's function declarations take an OpenAPI subset of JSON Schema and refuse the rest
# ($schema, additionalProperties, $ref/$defs, const, default, title, examples, ...).
_GEMINI_KEYS = frozenset(
    {
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "properties",
        "required",
        "items",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "anyOf",
        "minProperties",
        "maxProperties",
        "propertyOrdering",
    }
)
_MAX_DEPTH = 32
#: Most JSON objects one tool's schema may have once its ``$ref`` s are inlined for Gemini;
#: a schema past it (a server's ``$defs`` referring to one another many times over grow
#: exponentially) is refused with ``MCPProtocolError`` after at most this much work.
MAX_SCHEMA_NODES = 5000


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` reduced to what Gemini accepts, meaning kept where it can be.

    Local ``$ref``s (``#/$defs/X``, ``#/definitions/X``) are inlined (a cycle or a nesting
    deeper than 32 becomes a plain ``{"type": "object"}``); ``type: [T, "null"]`` and an
    ``anyOf`` member ``{"type": "null"}`` become ``nullable``; ``const`` becomes a
    one-value ``enum``; tuple-form ``items`` (a list) becomes one ``items`` schema (an
    ``anyOf`` of the members when they differ); a property whose schema is ``true`` takes
    any value (``{}``), one whose schema is ``false`` is dropped, and ``required`` names only
    the properties kept; other keywords Gemini refuses are dropped. The input is not changed.
    Raises ``MCPProtocolError`` when the result would have more than
    :data:`MAX_SCHEMA_NODES` objects.
    """
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        found = schema.get(key)
        if isinstance(found, Mapping):
            defs.update({f"#/{key}/{name}": value for name, value in found.items()})
    return _Gemini(defs).node(schema, (), 0)


class _Gemini:
    """One schema's conversion: its definitions and the objects made so far."""

    def __init__(self, defs: Mapping[str, Any]) -> None:
        self.defs = defs
        self.made = 0

    def node(self, node: Mapping[str, Any], seen: tuple[str, ...], depth: int) -> dict[str, Any]:
        self.made += 1
        if self.made > MAX_SCHEMA_NODES:
            raise MCPProtocolError(
                f"the schema grows past {MAX_SCHEMA_NODES} objects with its $refs inlined"
            )
        if depth > _MAX_DEPTH:
            return {"type": "object"}
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self.defs.get(ref)
            if ref in seen or not isinstance(target, Mapping):
                return {"type": "object"}
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return self.node(merged, (*seen, ref), depth + 1)
        out: dict[str, Any] = {}
        kind = node.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            if len(kinds) < len(kind):
                out["nullable"] = True
            kind = kinds[0] if len(kinds) == 1 else None
            if len(kinds) > 1:
                out["anyOf"] = [{"type": k} for k in kinds]
        if isinstance(kind, str):
            out["type"] = kind
        if "const" in node and "enum" not in node:
            out["enum"] = [node["const"]]
        for key, value in node.items():
            if key not in _GEMINI_KEYS or key in out or key in ("type", "required"):
                continue
            if key == "properties" and isinstance(value, Mapping):
                out[key] = {
                    name: {} if sub is True else self.node(sub, seen, depth + 1)
                    for name, sub in value.items()
                    if isinstance(sub, Mapping) or sub is True
                }
            elif key == "items" and isinstance(value, Mapping):
                out[key] = self.node(value, seen, depth + 1)
            elif key == "items" and isinstance(value, list):
                self.one_of(out, key, value, seen, depth)
            elif key == "anyOf" and isinstance(value, list):
                self.any_of(out, value, seen, depth)
            else:
                out[key] = value
        required = node.get("required")
        if isinstance(required, list):
            kept = out.get("properties")
            names = [n for n in required if kept is None or n in kept]
            if names or kept is None:
                out["required"] = names
        return out

    def one_of(
        self, out: dict[str, Any], key: str, members: list[Any], seen: tuple[str, ...], depth: int
    ) -> None:
        """Tuple-form ``items``: one schema every position may take."""
        converted: list[dict[str, Any]] = []
        for member in members:
            if isinstance(member, Mapping):
                made = self.node(member, seen, depth + 1)
                if made not in converted:
                    converted.append(made)
        if len(converted) == 1:
            out[key] = converted[0]
        elif converted:
            out[key] = {"anyOf": converted}

    def any_of(
        self, out: dict[str, Any], members: list[Any], seen: tuple[str, ...], depth: int
    ) -> None:
        schemas = [m for m in members if isinstance(m, Mapping)]
        rest = [m for m in schemas if m.get("type") != "null"]
        if len(rest) < len(schemas):
            out["nullable"] = True
        converted = [self.node(m, seen, depth + 1) for m in rest]
        if len(converted) == 1:
            for sub_key, sub_value in converted[0].items():
                out.setdefault(sub_key, sub_value)
        elif converted:
            out["anyOf"] = converted
