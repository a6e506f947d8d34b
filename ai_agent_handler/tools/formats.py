"""Tools in each model's format (pure): what goes into ``agent["configuration"]["tools"]``.

A server's tool is a :class:`ToolSpec` (its name, description and input JSON Schema, as
listed); :func:`export` turns specs into the shape the provider's API takes, by
``llm_name``. Gemini refuses several JSON Schema keywords, so its schemas go through
:func:`gemini_schema` first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

__all__ = ["LLM_NAMES", "ToolSpec", "export", "gemini_schema", "native_entry"]


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


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` reduced to what Gemini accepts, meaning kept where it can be.

    Local ``$ref``s (``#/$defs/X``, ``#/definitions/X``) are inlined (a cycle or a nesting
    deeper than 32 becomes a plain ``{"type": "object"}``); ``type: [T, "null"]`` and an
    ``anyOf`` member ``{"type": "null"}`` become ``nullable``; ``const`` becomes a
    one-value ``enum``; other keywords Gemini refuses are dropped. The input is not changed.
    """
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        found = schema.get(key)
        if isinstance(found, Mapping):
            defs.update({f"#/{key}/{name}": value for name, value in found.items()})
    return _gemini_node(schema, defs, (), 0)


def _gemini_node(
    node: Mapping[str, Any], defs: Mapping[str, Any], seen: tuple[str, ...], depth: int
) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        return {"type": "object"}
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref)
        if ref in seen or not isinstance(target, Mapping):
            return {"type": "object"}
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _gemini_node(merged, defs, (*seen, ref), depth + 1)
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
        if key not in _GEMINI_KEYS or key in out or key == "type":
            continue
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {
                name: _gemini_node(sub, defs, seen, depth + 1)
                for name, sub in value.items()
                if isinstance(sub, Mapping)
            }
        elif key == "items" and isinstance(value, Mapping):
            out[key] = _gemini_node(value, defs, seen, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            members = [m for m in value if isinstance(m, Mapping)]
            rest = [m for m in members if m.get("type") != "null"]
            if len(rest) < len(members):
                out["nullable"] = True
            converted = [_gemini_node(m, defs, seen, depth + 1) for m in rest]
            if len(converted) == 1:
                for sub_key, sub_value in converted[0].items():
                    out.setdefault(sub_key, sub_value)
            elif converted:
                out[key] = converted
        else:
            out[key] = value
    return out
