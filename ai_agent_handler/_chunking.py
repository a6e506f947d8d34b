"""Text, XML and JSON chunking for streamed model output (pure functions).

The handler's ``process_text_content`` and ``process_and_send_json`` decide *what* to send
with these helpers and then send each piece with ``send_data_to_stream``. The rules are
upstream's, exactly (provider handlers and WebSocket clients depend on them):
``tests/unit/test_upstream_vectors.py`` replays cases recorded from the upstream class.
"""

from __future__ import annotations

import json

#: A buffer holding ``<`` but no ``>`` is sent whole, as text, once it is longer than this.
XML_FLUSH_LIMIT = 500

# The endings tried after the string itself fails to parse, in this order. "}" twice is
# upstream's list; the second try can never succeed, so it costs one failed parse at most.
_ENDINGS = ("}", "]", "}", "}]", "}]}", "}}")


def split_xml(buf: str) -> list[tuple[str, str]]:
    """Split a buffer into ``(data_format, piece)`` chunks, in order.

    Scanning left to right: the text before a ``<``; from that ``<`` to the next ``>`` (a
    tag, which may contain another ``<``: ``a<b<c>d`` gives ``a``, ``<b<c>``, ``d``); from a
    ``<`` with no ``>`` after it to the end; the text after the last tag. A piece holding
    both ``<`` and ``>`` is ``"xml"``, any other ``"text"``. Empty pieces are never made.
    """
    pieces: list[tuple[str, str]] = []
    position = 0
    while (start := buf.find("<", position)) >= 0:
        if start > position:
            pieces.append(("text", buf[position:start]))
        end = buf.find(">", start)
        if end < 0:
            pieces.append(("text", buf[start:]))
            return pieces
        pieces.append(("xml", buf[start : end + 1]))
        position = end + 1
    if position < len(buf):
        pieces.append(("text", buf[position:]))
    return pieces


def try_complete_json(s: str) -> str:
    """``s`` itself when it parses as JSON; else the first *ending* of ``}``, ``]``, ``}``,
    ``}]``, ``}]}``, ``}}`` for which ``s + ending`` parses; else ``""``.

    It returns the ending, not the completed string: callers test it for truth.
    """
    try:
        json.loads(s)
    except json.JSONDecodeError:
        pass
    else:
        return s
    for ending in _ENDINGS:
        try:
            json.loads(s + ending)
        except json.JSONDecodeError:
            continue
        return ending
    return ""
