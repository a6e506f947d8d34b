"""Provider handlers written the way upstream's are, and the engine's way of driving them.

- :class:`OpenAIStyleHandler` streams text, calls an MCP tool through ``get_function`` when
  its script says so and asks itself again with the tool's output (as upstream's OpenAI
  handler does), appending the call to ``self._short_term_memory`` when it runs without a
  run (local use), and ends its message.
- :class:`TravrseStyleHandler` gives the model service the enabled tools with their
  ``config`` URL formatted with the endpoint (the service calls them itself, here: the test
  plays the service and POSTs to that URL), streams without ever ending the message, sends
  a last empty chunk after ``final_output`` and sets ``stream_event`` in a ``finally``.
- :func:`drive` is the engine: ``ask_model`` in a daemon thread with a queue and an event,
  the ``run_id`` taken from the queue, then ``stream_event.wait(120)``, and it returns;
  without streaming it calls ``ask_model`` and returns its result. It never joins the
  thread and never calls ``flush()``.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from queue import Queue
from typing import Any

from ai_agent_handler import AIAgentEventHandler

__all__ = ["OpenAIStyleHandler", "TravrseStyleHandler", "drive"]


def drive(handler: AIAgentEventHandler, input_messages: list[dict[str, Any]], stream: bool) -> Any:
    """Run ``handler.ask_model`` as the engine does and return when the engine would."""
    if not stream:
        return handler.ask_model(input_messages)  # type: ignore[attr-defined]
    queue: Queue[dict[str, Any]] = Queue()
    stream_event = threading.Event()
    threading.Thread(
        target=handler.ask_model,  # type: ignore[attr-defined]
        args=(input_messages, queue, stream_event),
        daemon=True,
    ).start()
    current = queue.get(timeout=60)
    stream_event.wait(timeout=120)
    return current["value"]


class OpenAIStyleHandler(AIAgentEventHandler):
    """Answers with ``setting["reply"]`` deltas; first calls ``setting["tool_call"]`` if any."""

    def ask_model(
        self,
        input_messages: list[dict[str, Any]],
        queue: Queue[dict[str, Any]] | None = None,
        stream_event: threading.Event | None = None,
        model_setting: dict[str, Any] | None = None,
    ) -> str:
        run_id = f"resp-{len(input_messages)}"
        if queue is not None:
            queue.put({"name": "run_id", "value": run_id})
        tool_call = self.setting.get("tool_call")
        if tool_call and not any(m.get("role") == "tool" for m in input_messages):
            name, arguments = tool_call
            output = self.get_function(name)(**arguments)
            if self._run is None:
                self._short_term_memory.append(
                    {"message": {"role": "assistant", "tool_call": name}, "created_at": 0}
                )
                self._short_term_memory.append(
                    {"message": {"role": "tool", "content": json.dumps(output)}, "created_at": 0}
                )
            answered = [*input_messages, {"role": "tool", "content": json.dumps(output)}]
            return self.ask_model(answered, queue, stream_event, model_setting)
        index, buf = 0, ""
        for delta in self.setting.get("reply", []):
            self.accumulated_text += delta
            buf += delta
            index, buf = self.process_text_content(index, buf, "text")
        if self.setting.get("message_end", True):
            self.send_data_to_stream(index=index, chunk_delta=buf, is_message_end=True)
        elif buf:
            self.send_data_to_stream(index=index, chunk_delta=buf)
        self.final_output = {"message_id": run_id, "role": "assistant", "content": buf}
        if stream_event is not None:
            stream_event.set()
        return run_id


class TravrseStyleHandler(AIAgentEventHandler):
    """Calls its enabled tools through their ``config`` URL; never ends the message."""

    def ask_model(
        self,
        input_messages: list[dict[str, Any]],
        queue: Queue[dict[str, Any]] | None = None,
        stream_event: threading.Event | None = None,
        model_setting: dict[str, Any] | None = None,
    ) -> None:
        if queue is not None:
            queue.put({"name": "run_id", "value": "travrse-run"})
        try:
            configuration = self.agent["configuration"]
            answers = []
            for tool in configuration.get("tools", []):
                if tool["name"] not in configuration.get("enabled_tools", []):
                    continue
                url = tool["config"]["url"]
                tool["config"]["url"] = url.format(endpoint_id=self.endpoint_id)
                answers.append(_post(tool["config"], self.setting.get("tool_arguments", {})))
            index = 0
            for delta in self.setting.get("reply", []):
                self.send_data_to_stream(index=index, chunk_delta=delta)
                index += 1
            content = "".join(self.setting.get("reply", [])) + "".join(answers)
            self.final_output = {"message_id": "m", "role": "assistant", "content": content}
            self.send_data_to_stream(index=index, chunk_delta="")
            if self._run is None:
                self._short_term_memory.append({"role": "assistant", "content": content})
        finally:
            if stream_event is not None:
                stream_event.set()


def _post(config: dict[str, Any], arguments: dict[str, Any]) -> str:
    """What the model service does with a runtime tool: POST the arguments to its URL."""
    request = urllib.request.Request(
        config["url"],
        data=json.dumps(arguments).encode(),
        headers={"Content-Type": "application/json", **config["headers"]},
        method=config["method"],
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(json.loads(answer.read())["content"][0]["text"])
