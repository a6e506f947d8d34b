"""Text, XML and JSON chunking for streamed model output (pure functions).

The handler's ``process_text_content`` and ``process_and_send_json`` decide *what* to send
with these helpers and then send each piece with ``send_data_to_stream``.
"""

from __future__ import annotations

import json
import re

__all__ = ["XML_FLUSH_LIMIT", "closing_suffix", "split_xml", "try_complete_json"]

#: A buffer holding ``<`` but no ``>`` is sent whole, as text, once it is longer than this.
XML_FLUSH_LIMIT = 500

_TAG = re.compile(r"(<[^<>]*>)")

# The suffixes upstream tries, in its order; closing_suffix() covers deeper nesting.
_SUFFIXES = ("}", "]", "}}", "}]", "]}", "}]}", "]}}", "}}}")


def split_xml(buf: str) -> list[tuple[str, str]]:
    """Split a buffer into ``(data_format, piece)`` chunks, in order.

    Text before a tag, each ``<...>`` tag, an unclosed ``<...`` remainder and trailing text
    each become one chunk: ``"xml"`` for a piece with both ``<`` and ``>``, else ``"text"``.
    """
    pieces: list[str] = []
    parts = _TAG.split(buf)
    for i, part in enumerate(parts):
        if not part:
            continue
        is_last = i == len(parts) - 1
        cut = part.rfind("<") if is_last and not part.startswith("<") else -1
        if is_last and cut > 0:
            pieces.extend((part[:cut], part[cut:]))
        else:
            pieces.append(part)
    return [("xml" if "<" in p and ">" in p else "text", p) for p in pieces]


def closing_suffix(s: str) -> str | None:
    """The brackets that would close every open ``{``/``[`` of ``s``, or None.

    None when ``s`` ends inside a string (a partial string is not sent) or when its
    brackets do not match.
    """
    stack: list[str] = []
    in_string = escaped = False
    for ch in s:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and (not stack or stack.pop() != ch):
            return None
    if in_string:
        return None
    return "".join(reversed(stack))


def _parses(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def try_complete_json(s: str) -> str:
    """``s`` if it is valid JSON, else ``s`` plus the first closing suffix that makes it
    valid, else ``""``."""
    if _parses(s):
        return s
    suffix = closing_suffix(s)
    if suffix and _parses(s + suffix):
        return s + suffix
    for suffix in _SUFFIXES:
        if _parses(s + suffix):
            return s + suffix
    return ""
