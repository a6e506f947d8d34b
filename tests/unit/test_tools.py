"""The pure parts of MCP tools: model formats, Gemini's schema subset, server entries, routes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ai_agent_handler.exceptions import MCPConfigError, MCPProtocolError
from ai_agent_handler.tools.formats import (
    MAX_SCHEMA_NODES,
    ToolSpec,
    export,
    gemini_schema,
    native_entry,
)
from ai_agent_handler.tools.servers import parse_servers, routes

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
TOOL = ToolSpec("add", "Add.", SCHEMA)


@pytest.mark.parametrize(
    ("llm_name", "expected"),
    [
        ("gpt", {"type": "function", "name": "add", "description": "Add.", "parameters": SCHEMA}),
        (
            "openai",
            {"type": "function", "name": "add", "description": "Add.", "parameters": SCHEMA},
        ),
        ("claude", {"name": "add", "description": "Add.", "input_schema": SCHEMA}),
        ("gemini", {"name": "add", "description": "Add.", "parameters": SCHEMA}),
        (
            "ollama",
            {
                "type": "function",
                "function": {"name": "add", "description": "Add.", "parameters": SCHEMA},
            },
        ),
        (
            "travrse",
            {
                "name": "add",
                "description": "Add.",
                "tool_type": "external",
                "parameters_schema": SCHEMA,
            },
        ),
    ],
)
def test_each_model_gets_its_format(llm_name: str, expected: dict[str, Any]) -> None:
    assert export(llm_name, [TOOL]) == [expected]


def test_native_entries_copy_the_headers() -> None:
    headers = {"X-Tenant": "t"}
    entry = native_entry("srv", "http://h/mcp", headers)
    assert entry == {
        "type": "mcp",
        "server_label": "srv",
        "server_url": "http://h/mcp",
        "headers": {"X-Tenant": "t"},
        "require_approval": "never",
    }
    assert entry["headers"] is not headers


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "additionalProperties": False,
                "title": "addArguments",
                "properties": {"a": {"type": "integer", "title": "A", "default": 1}},
                "required": ["a"],
            },
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        ),
        (
            {"type": "object", "properties": {"n": {"type": ["string", "null"]}}},
            {"type": "object", "properties": {"n": {"type": "string", "nullable": True}}},
        ),
        (
            {"properties": {"n": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}},
            {"properties": {"n": {"type": "integer", "nullable": True}}},
        ),
        (
            {"properties": {"mode": {"const": "fast"}}},
            {"properties": {"mode": {"enum": ["fast"]}}},
        ),
        (
            {
                "type": "object",
                "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}}},
                "properties": {"p": {"$ref": "#/$defs/Point", "description": "where"}},
            },
            {
                "type": "object",
                "properties": {
                    "p": {
                        "type": "object",
                        "properties": {"x": {"type": "number"}},
                        "description": "where",
                    }
                },
            },
        ),
        (  # a property *named* like a refused keyword is a name, not a keyword
            {"properties": {"title": {"type": "string"}, "default": {"type": "string"}}},
            {"properties": {"title": {"type": "string"}, "default": {"type": "string"}}},
        ),
        (
            {
                "$defs": {
                    "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
                },
                "$ref": "#/$defs/Node",
            },
            {"type": "object", "properties": {"next": {"type": "object"}}},
        ),
        ({"items": {"$ref": "#/$defs/Missing"}}, {"items": {"type": "object"}}),
        (  # tuple-form items: one schema for every position, refused keywords dropped inside
            {
                "type": "array",
                "items": [
                    {"type": "string", "$schema": "x", "additionalProperties": False},
                    {"$ref": "#/$defs/N"},
                ],
                "$defs": {"N": {"type": "number", "title": "N"}},
            },
            {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "number"}]}},
        ),
        (
            {"type": "array", "items": [{"type": "string"}, {"type": "string", "title": "t"}]},
            {"type": "array", "items": {"type": "string"}},
        ),
        (  # a property whose schema is true takes anything; false is dropped with its name
            {
                "type": "object",
                "properties": {"any": True, "never": False, "n": {"type": "integer"}},
                "required": ["any", "never", "n"],
            },
            {
                "type": "object",
                "properties": {"any": {}, "n": {"type": "integer"}},
                "required": ["any", "n"],
            },
        ),
        (
            {"type": "object", "properties": {"never": False}, "required": ["never"]},
            {"type": "object", "properties": {}},
        ),
    ],
)
def test_gemini_schema_keeps_meaning_and_drops_refused_keywords(
    schema: dict[str, Any], expected: dict[str, Any]
) -> None:
    given = copy.deepcopy(schema)
    assert gemini_schema(schema) == expected
    assert schema == given


def bomb(levels: int, refs: int = 4) -> dict[str, Any]:
    """Each definition refers to the next ``refs`` times (no cycle): refs**levels objects."""
    defs: dict[str, Any] = {
        f"D{i}": {"properties": {f"p{j}": {"$ref": f"#/$defs/D{i + 1}"} for j in range(refs)}}
        for i in range(levels)
    }
    defs[f"D{levels}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/D0"}


@pytest.mark.parametrize("levels", [10, 30, 200])
def test_a_schema_that_grows_past_the_node_budget_is_refused(levels: int) -> None:
    with pytest.raises(MCPProtocolError, match=f"past {MAX_SCHEMA_NODES} objects"):
        gemini_schema(bomb(levels))


def test_a_schema_within_the_node_budget_is_inlined_whole() -> None:
    converted = gemini_schema(bomb(5, refs=4))  # 4**5 = 1024 strings, 1365 objects in all
    leaf: Any = converted
    for _ in range(5):
        leaf = leaf["properties"]["p3"]
    assert leaf == {"type": "string"}


def entry(**setting: Any) -> dict[str, Any]:
    return {"name": "srv", "setting": {"base_url": "http://127.0.0.1:1/mcp", **setting}}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"name": "srv"}, "must be a list of servers"),
        (["srv"], r"mcp_servers\[0\] must be a dict"),
        ([{"setting": {}}], "'name' must be a non-empty string"),
        ([{"name": "srv"}], "'setting' must be a dict"),
        ([entry(base_url="ftp://h")], "'base_url' must be an http"),
        ([entry(base_url=None)], "'base_url' must be an http"),
        ([entry(headers={"X": 1})], "'headers' must be a dict of strings"),
        ([entry(headers={"X": "a\r\nInjected: 1"})], "line break"),
        ([entry(bearer_token="")], "'bearer_token' must be a non-empty string"),
        ([entry(call_timeout=0)], "'call_timeout' must be a positive number"),
        ([entry(connect_timeout=float("nan"))], "'connect_timeout' must be a positive"),
        ([entry(list_timeout=True)], "'list_timeout' must be a positive"),
        ([entry(tools_ttl="600")], "'tools_ttl' must be a positive"),
        ([entry(allow_tools="add")], "'allow_tools' must be a list of tool names"),
        ([entry(block_tools=[1])], "'block_tools' must be a list of tool names"),
        ([entry(tool_prefix=3)], "'tool_prefix' must be a string"),
        ([entry(tools_max_stale=-1)], "'tools_max_stale' must be a positive"),
        ([entry(call_timout=5)], r"unknown setting 'call_timout' \(did you mean 'call_timeout'"),
    ],
)
def test_bad_server_entries_are_refused_by_name(entries: Any, message: str) -> None:
    with pytest.raises(MCPConfigError, match=message):
        parse_servers(entries)


def test_the_bearer_token_becomes_the_authorization_header_and_part_of_the_key() -> None:
    plain, tokened, other_case = parse_servers(
        [
            entry(headers={"X-Tenant": "t"}),
            entry(headers={"X-Tenant": "t", "authorization": "old"}, bearer_token="tok"),
            entry(headers={"x-tenant": "t"}),
        ]
    )
    assert dict(tokened.headers) == {"X-Tenant": "t", "Authorization": "Bearer tok"}
    assert plain.key != tokened.key
    assert plain.key == other_case.key  # header names are case-insensitive


def test_offered_tools_follow_allow_block_and_prefix() -> None:
    (server,) = parse_servers(
        [entry(allow_tools=["add", "echo", "fail"], block_tools=["fail"], tool_prefix="m_")]
    )
    tools = [ToolSpec(n, "", {}) for n in ("add", "echo", "fail", "slow")]
    assert [(spec.name, remote) for spec, remote in server.offered(tools)] == [
        ("m_add", "add"),
        ("m_echo", "echo"),
    ]


def test_routes_refuse_a_name_offered_twice() -> None:
    one, two = parse_servers([entry(), {**entry(), "name": "other"}])
    table = routes([(one, [("add", "add")]), (two, [("sub", "sub")])])
    assert table["sub"].server is two and table["add"].tool == "add"
    with pytest.raises(MCPConfigError, match="'add' is offered by servers 'srv' and 'other'"):
        routes([(one, [("add", "add")]), (two, [("add", "add")])])
