"""The data behind the keys, on the example receiver's table: backfill, verify, shadow reads.

``python3 dev.py demo backfill`` runs it against a local AWS (moto, in process). The agent
task function (``examples/agent_task_receiver.py``) keeps its runs in one DynamoDB table,
partition key ``pk``: before the migration under ``endpoint_id``, after it under
``endpoint_id#part_id``. The demo:

1. writes runs the way handlers did before the migration (legacy keys);
2. turns the endpoints composite: their reads now need the fallback (``LegacyFallbackHits``)
   and the shadow reads say ``ShadowLegacyOnly`` (backfill owed); a new run is written under
   the composite key only;
3. runs ``ai-agent-rollout backfill`` (a dry run, then the copy, then ``backfill verify``),
   keeping the checkpoints beside the production live flag file, where ``retire-check``
   finds the verification;
4. reads again: no fallback hit, every shadow read ``ShadowSame``: the fallback can go.

Exit 0 when every step did what it says.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the examples package is beside the library
    sys.path.insert(0, str(ROOT))

TABLE = "agent-tasks"
#: Legacy key (the endpoint_id handlers sent before) -> (endpoint_id, part_id): which part
#: the endpoint's old items belong to, what only the receiver's team knows. An endpoint that
#: served several parts needs a rule of the item instead (``--part-of module:function``).
PARTS = {
    "aws-prod-us-east-1": ("aws-prod-us-east-1", "acme-corp"),
    "aws-prod-eu-west-1": ("aws-prod-eu-west-1", "initech"),
    "aws-prod-ap-south-1": ("aws-prod-ap-south-1", "globex"),
}
RUNS = 40  # per tenant


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when the backfill, the verification and the reads came out right."""
    del argv
    started = time.perf_counter()
    for name, value in (
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "demo"),
        ("AWS_SECRET_ACCESS_KEY", "demo"),
        ("TASK_TABLE", TABLE),
        ("WEBSOCKET_API_URL", "https://ws.example.com/prod"),
        ("AI_AGENT_HANDLER_METRICS", "emf"),
    ):
        os.environ[name] = value
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    from moto import mock_aws

    scratch = Path(tempfile.mkdtemp(prefix="ai-agent-rollout-backfill-"))
    try:
        with mock_aws():
            return _demo(scratch, started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _demo(scratch: Path, started: float) -> int:
    import boto3

    from ai_agent_handler.ops import cli
    from ai_agent_handler.ops.retire_io import read_backfills
    from examples import agent_task_receiver as receiver

    boto3.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    functions = receiver.TaskFunctions(
        boto3.resource("dynamodb").Table(TABLE), connections=None, shadow_sample=1.0
    )
    problems: list[str] = []

    def call(key: str, scheme: str, funct: str, **params: Any) -> Counter[str]:
        """One call of the agent task function; the counters of its EMF lines."""
        routing = receiver.route({"endpoint_id": key, "key_scheme": scheme})
        lines = io.StringIO()
        with contextlib.redirect_stdout(lines):
            functions.call(routing, funct, params)
        counted: Counter[str] = Counter()
        for line in lines.getvalue().splitlines():
            for name, value in json.loads(line).items():
                if isinstance(value, int) and not isinstance(value, bool):
                    counted[name] += value
        return counted

    def read_all() -> Counter[str]:
        total: Counter[str] = Counter()
        for legacy, (endpoint, part) in PARTS.items():
            for n in range(RUNS):
                total += call(
                    f"{endpoint}#{part}", "composite", "get_run", run_uuid=f"{legacy}-{n}"
                )
        return total

    print(f"1. Before the migration: handlers write {RUNS} runs per tenant under endpoint_id")
    for legacy in PARTS:
        for n in range(RUNS):
            call(legacy, "legacy", "insert_update_run", run_uuid=f"{legacy}-{n}", status="done")
    print(f"   {TABLE}: {len(PARTS) * RUNS} runs under {', '.join(PARTS)}")

    print("\n2. The endpoints turn composite; every old run is read through the fallback")
    call("aws-prod-us-east-1#acme-corp", "composite", "insert_update_run", run_uuid="new-1")
    before = read_all()
    _show(before)
    _expect(problems, before["LegacyFallbackHits"] == len(PARTS) * RUNS, "every read fell back")
    _expect(problems, before["ShadowLegacyOnly"] == len(PARTS) * RUNS, "backfill owed for all")

    live = scratch / "production.flagd.json"
    parts_csv = scratch / "parts.csv"
    rows = [f"{legacy},{e},{p}" for legacy, (e, p) in PARTS.items()]
    parts_csv.write_text("legacy_key,endpoint_id,part_id\n" + "\n".join(rows) + "\n")
    common = ["--source-table", TABLE, "--target-table", TABLE, "--source-key", "pk"]
    common += ["--map", str(parts_csv), "--segments", "2"]

    print("\n3. Backfill: a dry run, the copy, and the proof (checkpoints beside the live file)")
    for step, expected in (
        (["backfill", *common, "--dry-run"], cli.EXIT_OK),
        (["backfill", *common], cli.EXIT_OK),
        (["backfill", "verify", *common], cli.EXIT_OK),
    ):
        shown = ["ai-agent-rollout", "--file", live.name, *step]
        print("   $ " + " ".join(a if a != str(parts_csv) else "parts.csv" for a in shown))
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(["--file", str(live), *step])
        print("\n".join("     " + line for line in out.getvalue().splitlines()))
        _expect(problems, code == expected, f"{' '.join(step[:2])} exit {code}")
    recorded = read_backfills(str(live))
    for record in recorded.records:
        print(f"   retire-check will read: {record.summary()}")
    _expect(problems, len(recorded.records) == 1 and recorded.records[0].complete, "recorded")

    print("\n4. The same reads after the backfill")
    after = read_all()
    _show(after)
    _expect(problems, after["LegacyFallbackHits"] == 0, "no read needs the legacy key")
    _expect(problems, after["ShadowSame"] == len(PARTS) * RUNS, "every copy agrees")

    seconds = time.perf_counter() - started
    if problems:
        print(f"\nFAILED: {'; '.join(problems)}")
        return 1
    print(
        f"\nOK in {seconds:.1f} s: {len(PARTS) * RUNS} runs backfilled to endpoint_id#part_id, "
        "verified, and read without the fallback; the new run written under the composite "
        "key was left as it was."
    )
    return 0


def _show(counted: Counter[str]) -> None:
    names = ("ReceiverReads", "LegacyFallbackHits", "ShadowSame", "ShadowLegacyOnly")
    print("   " + ", ".join(f"{name} {counted[name]}" for name in names))


def _expect(problems: list[str], ok: bool, what: str) -> None:
    if not ok:
        problems.append(what)


if __name__ == "__main__":
    raise SystemExit(main())
