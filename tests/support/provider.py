"""An upstream-style provider handler, for running provider code the way it is written.

It does what the OpenAI / Anthropic / Gemini handlers do with the base class: persist the
run with ``invoke_async_funct``, stream the model's deltas through ``process_text_content``
(text) or ``process_and_send_json`` (structured output), end the message with
``send_data_to_stream(..., is_message_end=True)``, and catch ``ClientError`` around the
persistence calls, logging it and going on. The "model" replies from a script.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from ai_agent_handler import AIAgentEventHandler

__all__ = ["ScriptedModelHandler", "assemble"]


class ScriptedModelHandler(AIAgentEventHandler):
    """A provider handler whose model answers with the deltas it is given."""

    def __init__(self, logger: Any, agent: dict[str, Any], **setting: Any) -> None:
        super().__init__(logger, agent, **setting)
        self.persist_errors: list[str] = []

    def stream_text(self, deltas: Iterable[str], output_format: str = "text") -> str:
        self._persist("insert_update_run", status="in_progress")
        index, buf = 0, ""
        for delta in deltas:
            self.accumulated_text += delta
            buf += delta
            index, buf = self.process_text_content(index, buf, output_format)
        self.send_data_to_stream(
            index=index, data_format=output_format, chunk_delta=buf, is_message_end=True
        )
        self.final_output = {"role": "assistant", "content": self.accumulated_text}
        self._persist("insert_update_run", status="completed", content=self.accumulated_text)
        return self.accumulated_text

    def stream_json(self, deltas: Iterable[str]) -> Any:
        self._persist("insert_update_run", status="in_progress")
        index, complete, partial = 0, "", ""
        for delta in deltas:
            partial += delta
            index, complete, partial = self.process_and_send_json(index, complete, partial, "json")
        self.send_data_to_stream(
            index=index, data_format="json", chunk_delta=partial, is_message_end=True
        )
        self.final_output = json.loads(complete + partial)
        self._persist("insert_update_run", status="completed")
        return self.final_output

    def _persist(self, funct: str, **params: Any) -> None:
        try:
            self.invoke_async_funct(funct, **params)
        except ClientError as err:  # as upstream's provider handlers catch it
            self.logger.error("%s failed: %s", funct, err)
            self.persist_errors.append(err.response["Error"]["Code"])


def assemble(chunks: Iterable[dict[str, Any]]) -> dict[str, str]:
    """What a WebSocket client shows: per message group, the deltas in index order.

    ``chunks`` are the ``data`` objects of ``send_data_to_stream`` calls as delivered (in
    any order). A group is complete when its message-end chunk and every index before it
    arrived; an incomplete group raises, since a reader would see a hole.
    """
    groups: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for chunk in chunks:
        by_index = groups[chunk["message_group_id"]]
        assert chunk["index"] not in by_index, f"index {chunk['index']} delivered twice"
        by_index[chunk["index"]] = chunk
    out = {}
    for group, by_index in groups.items():
        last = max(by_index)
        assert by_index[last]["is_message_end"], f"{group}: no message end"
        assert sorted(by_index) == list(range(last + 1)), f"{group}: a hole in the stream"
        out[group] = "".join(by_index[i]["chunk_delta"] for i in range(last + 1))
    return out
