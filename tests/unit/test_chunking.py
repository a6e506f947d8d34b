"""The chunking rules behind the streaming helpers, as tables (pure functions, upstream's)."""

from __future__ import annotations

import json

import pytest

from ai_agent_handler import AIAgentEventHandler
from ai_agent_handler._chunking import split_xml, try_complete_json


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),  # parses: the string itself
        ("0", "0"),
        ('{"a": 1', "}"),  # else the ending, not the completed string
        ("[1, 2", "]"),
        ('{"a": {"b": 1', "}}"),
        ('[{"a": 1', "}]"),
        ('{"a": [{"b": 1', "}]}"),
        ('{"a": [1', ""),  # "]}" is not among the endings
        ('[{"a": [{"b": [1', ""),  # deeper than the endings reach
        ('{"a": "x}', ""),  # inside a string: nothing completes it
        ('{"a": ', ""),
        ("", ""),
        ("]", ""),
    ],
)
def test_try_complete_json(s: str, expected: str) -> None:
    assert try_complete_json(s) == expected
    assert AIAgentEventHandler.try_complete_json(s) == expected
    if expected and expected != s:
        json.loads(s + expected)


@pytest.mark.parametrize(
    ("buf", "pieces"),
    [
        ("plain", [("text", "plain")]),
        ("<a>", [("xml", "<a>")]),
        (
            "x<a>y<b>z",
            [("text", "x"), ("xml", "<a>"), ("text", "y"), ("xml", "<b>"), ("text", "z")],
        ),
        ("x <a", [("text", "x "), ("text", "<a")]),
        ("<a><b", [("xml", "<a>"), ("text", "<b")]),
        ("a < b <c>", [("text", "a "), ("xml", "< b <c>")]),  # a tag runs to the next ">"
        ("a<b<c>d", [("text", "a"), ("xml", "<b<c>"), ("text", "d")]),
        ("a>b<c>", [("text", "a>b"), ("xml", "<c>")]),  # a ">" before any "<" is text
        ("<>", [("xml", "<>")]),
        ("", []),
    ],
)
def test_split_xml(buf: str, pieces: list[tuple[str, str]]) -> None:
    assert split_xml(buf) == pieces
    assert "".join(piece for _, piece in pieces) == buf
