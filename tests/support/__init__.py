"""What the tests share besides fixtures: constants here, helpers in the modules beside.

Fixtures live in ``conftest.py`` files; these modules are imported explicitly.

* :mod:`.aws`: what boto3 really sent (Lambda requests, SQS messages), EMF lines.
* :mod:`.flags`: phase documents, flag-file writers, provider recorders.
* :mod:`.cli`: running ``ai-agent-rollout`` in process, scratch phase files and checkouts,
  audit records.
* :mod:`.live`: a live flag file, local or on S3, with raw access to its bytes and audit.
* :mod:`.fault_server`: a scripted Lambda / SQS / S3 on loopback.
* :mod:`.dev`: ``dev.py`` (the developer entry point) loaded as a module.
* :mod:`.code_from_text`: the package run on code-shaped text under an audit hook.
* :mod:`.rollout`: a rollout with a history (edits, a ramp stepped and rolled back by an
  alarm) through the CLI, and damaged records planted in its audit trail.
* :mod:`.browser`: a page opened in a real headless Chromium with the network off.
* :mod:`.tables`: DynamoDB tables shaped like the receivers' (before and after the key
  migration) and their items, for the backfill.
"""

from __future__ import annotations

from pathlib import Path

from ai_agent_handler.settings import PHASES

__all__ = ["BUCKET", "FLAGS_DIR", "PHASES", "REGION", "REPO", "RUN", "SHARED"]

#: The repository root, and the shipped phase files in it.
REPO = Path(__file__).resolve().parents[2]
FLAGS_DIR = REPO / "flags"
#: The read-only material beside the repository (upstream vectors, flagd testbed).
SHARED = REPO.parent / "shared"

#: The region of every local AWS.
REGION = "us-east-1"
#: The bucket of the `s3` fixture (live flag files are kept in S3 by operators).
BUCKET = "ops-flags"

#: A run as the engine assigns it.
RUN = {"run_uuid": "run-1", "updated_by": "tester", "thread": {"thread_uuid": "thread-1"}}
