"""A short end-to-end run of a handler against a local Lambda (moto, in process)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from moto import mock_aws


def main() -> int:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    logging.basicConfig(level=logging.WARNING)
    with mock_aws(config={"lambda": {"use_docker": False}}):
        import boto3

        from ai_agent_handler import AIAgentEventHandler

        client = boto3.client("lambda")
        sent: list[dict[str, Any]] = []
        client.meta.events.register(
            "before-send.lambda.Invoke",
            lambda request, **_: sent.append(json.loads(request.body)),
        )
        handler = AIAgentEventHandler(
            logging.getLogger("demo"), {}, aws_lambda=client, rollout_phase="dev"
        )
        handler.endpoint_id = "aws-prod-us-east-1"
        handler.part_id = "acme-corp"
        handler.run = {"run_uuid": "run-1", "updated_by": "demo", "thread": {"thread_uuid": "t-1"}}
        handler.connection_id = "conn-1"
        handler.invoke_async_funct("insert_update_run", status="in_progress")
        index, buf = 0, ""
        for piece in ["Hello from ", "the <b>demo</b> agent", "."]:
            index, buf = handler.process_text_content(index, buf + piece, "text")
        handler.send_data_to_stream(index=index, chunk_delta=buf, is_message_end=True)
        for payload in sent:
            print(f"{payload['funct']:<22} endpoint_id={payload['endpoint_id']:<30} "
                  f"key_scheme={payload['key_scheme']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
