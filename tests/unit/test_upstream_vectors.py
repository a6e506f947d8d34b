"""The streaming helpers replay upstream's recorded cases: the same chunks, the same returns.

The cases are read from ``shared/upstream-vectors/streaming.json`` beside the repository at
test time (never copied here); the module is skipped when they are absent. Each chunk is
read from what reached ``Utility.invoke_funct_on_aws_lambda`` (the contract's test seam):
the ``data`` JSON a WebSocket client gets, and the suffix from its message group id.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from unittest import mock

import pytest

from ai_agent_handler import AIAgentEventHandler, Utility
from tests.support import SHARED

VECTORS = SHARED / "upstream-vectors" / "streaming.json"
_DOC: dict[str, Any] = json.loads(VECTORS.read_text()) if VECTORS.is_file() else {"cases": []}
CASES: list[dict[str, Any]] = _DOC["cases"]
DEFAULTS: dict[str, Any] = _DOC.get("chunk_defaults", {})

pytestmark = pytest.mark.skipif(not CASES, reason=f"upstream vectors not found at {VECTORS}")

CONNECTION, RUN_UUID = "ws-1", "run-1"
GROUP = f"{CONNECTION}-{RUN_UUID}"


class Sent(list[dict[str, Any]]):
    """Chunks as they reached the Utility seam, in upstream's recorded shape."""

    def __call__(self, logger: Any, key: str, funct: str, **kwargs: Any) -> None:
        assert funct == "send_data_to_stream"
        data = json.loads(kwargs["params"]["data"])
        group = data.pop("message_group_id")
        assert group == kwargs["message_group_id"]
        suffix = "" if group == GROUP else group.removeprefix(f"{GROUP}-")
        self.append({**data, "suffix": suffix})


def _handler(setting: dict[str, Any]) -> AIAgentEventHandler:
    handler = AIAgentEventHandler(logging.getLogger("test.vectors"), {}, **setting)
    handler.endpoint_id, handler.part_id = "ep", "part"
    handler.run = {"run_uuid": RUN_UUID, "updated_by": "u", "thread": {"thread_uuid": "t"}}
    handler.connection_id = CONNECTION
    return handler


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_upstream_case(case: dict[str, Any]) -> None:
    handler = _handler(dict(case["setting"]))
    method = getattr(handler, case["method"])
    for number, call in enumerate(case["calls"]):
        for key, value in (call.get("setting_update") or {}).items():
            if value is None:
                handler.setting.pop(key, None)
            else:
                handler.setting[key] = value
        sent = Sent()
        with mock.patch.object(Utility, "invoke_funct_on_aws_lambda", sent):
            returned = method(*call["args"], **call["kwargs"])
        where = f"{case['id']} call {number}"
        assert (list(returned) if isinstance(returned, tuple) else returned) == call["returns"], (
            where
        )
        assert sent == [{**DEFAULTS, **chunk} for chunk in call["chunks"]], where


def test_every_helper_and_setting_kind_is_covered() -> None:
    methods = {case["method"] for case in CASES}
    assert methods == {"process_text_content", "process_and_send_json", "try_complete_json"}
    assert any(call.get("setting_update") for case in CASES for call in case["calls"])
    assert any(
        chunk.get("suffix") for case in CASES for c in case["calls"] for chunk in c["chunks"]
    )
