"""The streaming helpers on real chunk sequences, asserted on what reached Lambda (moto).

Upstream's rules, one test per rule; ``tests/unit/test_upstream_vectors.py`` replays the
recorded cases.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.aws import LambdaCapture


def stream_chunks(sent: LambdaCapture) -> list[tuple[int, str, str]]:
    """(index, data_format, chunk_delta) of every send_data_to_stream that went out."""
    out = []
    for request in sent:
        assert request.funct == "send_data_to_stream"
        data = json.loads(request.payload["params"]["data"])
        out.append((data["index"], data["data_format"], data["chunk_delta"]))
    return out


def feed_text(handler: Any, pieces: list[str], output_format: str = "text") -> tuple[int, str]:
    index, buf = 0, ""
    for piece in pieces:
        index, buf = handler.process_text_content(index, buf + piece, output_format)
    return index, buf


def test_plain_text_is_sent_once_the_buffer_is_full(make_handler: Any, sent: LambdaCapture) -> None:
    handler = make_handler()
    index, buf = feed_text(handler, ["Hello", " wor", "ld, how", " are", " you?"])
    assert stream_chunks(sent) == [(0, "text", "Hello world, how")]
    assert (index, buf) == (1, " are you?")  # 9 characters: kept until the buffer fills


def test_output_format_is_kept_for_plain_text(make_handler: Any, sent: LambdaCapture) -> None:
    feed_text(make_handler(), ["# Title and more"], output_format="markdown")
    assert stream_chunks(sent) == [(0, "markdown", "# Title and more")]


def test_buffer_size_comes_from_the_setting(make_handler: Any, sent: LambdaCapture) -> None:
    handler = make_handler(accumulated_partial_text_buffer=3)
    index, buf = feed_text(handler, ["ab", "cd", "e", "fgh"])
    assert stream_chunks(sent) == [(0, "text", "abcd"), (1, "text", "efgh")]
    assert (index, buf) == (2, "")


def test_xml_tag_split_across_chunks_waits_for_its_end(
    make_handler: Any, sent: LambdaCapture
) -> None:
    handler = make_handler()
    index, buf = feed_text(
        handler, ["Answer: <thin", "king_step i", "d='1'", ">plan</thinking_step> done"]
    )
    assert stream_chunks(sent) == [
        (0, "text", "Answer: "),
        (1, "xml", "<thinking_step id='1'>"),
        (2, "text", "plan"),
        (3, "xml", "</thinking_step>"),
        (4, "text", " done"),
    ]
    assert (index, buf) == (5, "")


def test_unclosed_tag_remainder_is_its_own_chunk(make_handler: Any, sent: LambdaCapture) -> None:
    feed_text(make_handler(), ["<b>bold</b> then <i"])
    assert stream_chunks(sent) == [
        (0, "xml", "<b>"),
        (1, "text", "bold"),
        (2, "xml", "</b>"),
        (3, "text", " then "),
        (4, "text", "<i"),
    ]


def test_a_lone_lt_is_flushed_as_text_past_500_characters(
    make_handler: Any, sent: LambdaCapture
) -> None:
    handler = make_handler()
    text = "if a < b then " + "x" * 480
    index, buf = feed_text(handler, [text])
    assert not sent and buf == text  # 494 characters: still waiting for '>'
    index, buf = handler.process_text_content(index, buf + "y" * 10, "text")
    assert stream_chunks(sent) == [(0, "text", text + "y" * 10)]
    assert (index, buf) == (1, "")


def test_json_is_sent_piece_by_piece_when_completable(
    make_handler: Any, sent: LambdaCapture
) -> None:
    handler = make_handler()
    index, complete, partial = 0, "", ""
    for piece in ['{"ans', 'wer": "4', '2"', ', "steps": [1', ", 2]", "}"]:
        index, complete, partial = handler.process_and_send_json(
            index, complete, partial + piece, "json"
        )
    assert stream_chunks(sent) == [
        (0, "json", '{"answer": "42"'),
        (1, "json", ', "steps": [1, 2]'),  # '...[1' needs "]}", which is not an ending
        (2, "json", "}"),
    ]
    assert json.loads(complete) == {"answer": "42", "steps": [1, 2]}
    assert (index, partial) == (3, "")


def test_a_short_buffer_with_a_whole_tag_goes_at_once(
    make_handler: Any, sent: LambdaCapture
) -> None:
    # The "<" rule comes before the buffer size: "<b>x" is 4 characters, sent anyway.
    index, buf = feed_text(make_handler(), ["<b>x"])
    assert stream_chunks(sent) == [(0, "xml", "<b>"), (1, "text", "x")]
    assert (index, buf) == (2, "")


def test_a_tag_runs_to_the_first_closing_bracket(make_handler: Any, sent: LambdaCapture) -> None:
    feed_text(make_handler(), ["a<b<c>d"])
    assert stream_chunks(sent) == [(0, "text", "a"), (1, "xml", "<b<c>"), (2, "text", "d")]


def test_the_buffer_size_is_read_at_every_call(make_handler: Any, sent: LambdaCapture) -> None:
    handler = make_handler()
    index, buf = handler.process_text_content(0, "abcd", "text")
    assert (index, buf) == (0, "abcd") and not sent  # 4 < 10
    handler.setting["accumulated_partial_text_buffer"] = "4"  # a string, as settings often are
    index, buf = handler.process_text_content(index, buf, "text")
    assert stream_chunks(sent) == [(0, "text", "abcd")] and (index, buf) == (1, "")


def test_an_empty_partial_is_sent_when_the_whole_completes(
    make_handler: Any, sent: LambdaCapture
) -> None:
    handler = make_handler()
    assert handler.process_and_send_json(5, '{"a": 1', "", "json") == (6, '{"a": 1', "")
    assert handler.process_and_send_json(6, "", "", "json") == (6, "", "")  # "" never parses
    assert stream_chunks(sent) == [(5, "json", "")]


def test_the_suffix_names_the_message_group(make_handler: Any, sent: LambdaCapture) -> None:
    handler = make_handler()
    handler.process_text_content(0, "reasoning text", "text", suffix="rs#1")
    (request,) = sent
    data = json.loads(request.payload["params"]["data"])
    assert data["message_group_id"] == "conn-1-run-1-rs#1"
