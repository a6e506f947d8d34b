"""The chunking rules behind the streaming helpers, as tables (pure functions)."""

from __future__ import annotations

import pytest

from ai_agent_handler import AIAgentEventHandler
from ai_agent_handler._chunking import closing_suffix, split_xml, try_complete_json


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ('{"a": 1', '{"a": 1}'),
        ("[1, 2", "[1, 2]"),
        ('{"a": {"b": 1', '{"a": {"b": 1}}'),
        ('{"a": [1', '{"a": [1]}'),
        ('{"a": [{"b": 1', '{"a": [{"b": 1}]}'),
        ('[{"a": [{"b": [1', '[{"a": [{"b": [1]}]}]'),  # deeper than upstream's list
        ('{"a": "x}', ""),  # inside a string: not completable
        ('{"a": ', ""),
        ("", ""),
        ("]", ""),
    ],
)
def test_try_complete_json(s: str, expected: str) -> None:
    assert try_complete_json(s) == expected
    assert make_static_call(s) == expected


def make_static_call(s: str) -> str:
    return AIAgentEventHandler.try_complete_json(s)


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
        ("a < b <c>", [("text", "a < b "), ("xml", "<c>")]),
    ],
)
def test_split_xml(buf: str, pieces: list[tuple[str, str]]) -> None:
    assert split_xml(buf) == pieces
    assert "".join(piece for _, piece in pieces) == buf


@pytest.mark.parametrize(
    ("s", "suffix"), [("{", "}"), ("[{", "}]"), ('{"a":"[', None), ("}", None), ("[}", None)]
)
def test_closing_suffix(s: str, suffix: str | None) -> None:
    assert closing_suffix(s) == suffix
