"""The ramp across real processes: concurrent controllers, a controller killed mid-step, a
CI job waiting on the outcome. ``ai-agent-rollout`` runs as subprocesses; S3 and CloudWatch
are moto's threaded server on loopback (``AWS_ENDPOINT_URL``).

No test waits for time to pass: a step's bake is made over by setting the time the store
says the file was written (:func:`tests.support.store_clock.set_modified`), and a waiting
process is known to wait by the line it prints.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from ai_agent_handler.ops import edits
from ai_agent_handler.ops.store import FlagStore, open_store
from tests.support import BUCKET, FLAGS_DIR, REGION, REPO
from tests.support.store_clock import set_modified

#: A controller that dies at a chosen point of its step (``os._exit``: no cleanup at all):
#: ``before`` the one write of the flag file, or right ``after`` it.
DIES = """
import os, sys
from ai_agent_handler.ops import cli, ramp_control
real = ramp_control.commit
def commit(*args, **kwargs):
    if sys.argv[1] == "before":
        os._exit(9)
    real(*args, **kwargs)
    os._exit(9)
ramp_control.commit = commit
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.fixture
def env(moto_server: str) -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        AWS_ENDPOINT_URL=moto_server,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AI_AGENT_ROLLOUT_ACTOR="cron",
        PYTHONPATH=str(REPO),
    )
    return out


def cli(
    env: dict[str, str], *argv: str, script: str | None = None, extra: tuple[str, ...] = ()
) -> Any:
    command = (
        [sys.executable, "-c", script, *extra]
        if script
        else [sys.executable, "-m", "ai_agent_handler.ops.cli"]
    )
    return subprocess.Popen(
        [*command, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: Any, timeout: float = 60) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture(params=["local", "s3"])
def live(request: pytest.FixtureRequest, tmp_path: Path, moto_server: str) -> str:
    if request.param == "local":
        path = tmp_path / "production.flagd.json"
        shutil.copyfile(FLAGS_DIR / "production.flagd.json", path)
        return str(path)
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    s3.create_bucket(Bucket=BUCKET)
    key = "ai-agent/production.flagd.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=(FLAGS_DIR / "production.flagd.json").read_bytes())
    return f"s3://{BUCKET}/{key}"


@pytest.fixture
def store(live: str, moto_server: str) -> FlagStore:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    return open_store(live, s3_client=s3)


def records(store: FlagStore) -> list[dict[str, Any]]:
    location = store.audit_location
    if location.startswith("s3://"):
        client = store.client  # type: ignore[attr-defined]
        bucket, prefix = location[5:].split("/", 1)
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        got = [
            json.loads(client.get_object(Bucket=bucket, Key=i["Key"])["Body"].read())
            for i in listed
        ]
        return sorted(got, key=lambda r: r["version_after"])
    return [json.loads(line) for line in Path(location).read_text().splitlines()]


def ramp_actions(store: FlagStore) -> list[str]:
    return [r["ramp"]["action"] for r in records(store) if "ramp" in r]


def flag(store: FlagStore) -> dict[str, Any]:
    data = store.read().data
    assert data is not None
    return dict(json.loads(data))


def percent(store: FlagStore) -> int | None:
    return edits.read_state(flag(store)).percent


def ramp_state(store: FlagStore) -> dict[str, Any]:
    return dict(json.loads(flag(store)["metadata"]["ramp"]))


def start(env: dict[str, str], live: str, bake: str = "1h") -> None:
    code, _, err = finish(
        cli(
            env,
            "--file",
            live,
            "ramp",
            "start",
            "--steps",
            "1,5,25",
            "--bake",
            bake,
            "--min-decisions",
            "0",
        )
    )
    assert code == 0, err


def bake_over(store: FlagStore) -> None:
    """The store says the current step was written two hours ago (its bake is one)."""
    two_hours_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    set_modified(store, two_hours_ago)


def test_controllers_ticking_at_once_make_exactly_one_step(
    env: dict[str, str], live: str, store: FlagStore
) -> None:
    start(env, live)
    bake_over(store)
    controllers = [cli(env, "--file", live, "ramp", "tick") for _ in range(4)]
    results = [finish(c) for c in controllers]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err for _, _, err in results]
    assert percent(store) == 5
    assert ramp_actions(store) == ["start", "advance"]
    outs = [out for _, out, _ in results]
    assert sum("advanced to step 2/3 (5 %)" in out for out in outs) == 1, outs
    # Every other controller either lost the write or saw the new step baking.
    for out in outs:
        assert any(
            said in out
            for said in ("advanced to step 2/3", "changed the file meanwhile", "baking, ")
        ), out
    assert (ramp_state(store)["step"], ramp_state(store)["status"]) == (1, "running")


@pytest.mark.parametrize(
    ("dies", "at", "then"), [("before", 1, "advanced"), ("after", 5, "baking")]
)
def test_a_controller_killed_mid_step_leaves_one_whole_state_behind(
    env: dict[str, str], live: str, store: FlagStore, dies: str, at: int, then: str
) -> None:
    start(env, live)
    bake_over(store)
    code, _, _ = finish(cli(env, "--file", live, "ramp", "tick", script=DIES, extra=(dies,)))
    assert code == 9
    # Killed before its write: nothing happened. After: the step is whole (file and state
    # are one object). Either way the next tick has nothing to finish or wait for.
    assert percent(store) == at
    state = ramp_state(store)
    assert (state["step"], state["status"]) == (0 if at == 1 else 1, "running")
    code, out, err = finish(cli(env, "--file", live, "ramp", "tick"))
    assert code == 0, err
    assert then in out
    assert ramp_actions(store) == ["start", "advance"]
    assert percent(store) == 5


@pytest.mark.parametrize(
    ("lever", "code", "says"),
    [("pause", 5, "paused"), ("abort", 5, "aborted"), ("promote", 0, "done")],
)
def test_status_wait_exits_with_the_ramps_outcome(
    env: dict[str, str], tmp_path: Path, lever: str, code: int, says: str
) -> None:
    live = tmp_path / "production.flagd.json"
    shutil.copyfile(FLAGS_DIR / "production.flagd.json", live)
    start(env, str(live))
    waiting = cli(env, "--file", str(live), "ramp", "status", "--wait", "--interval", "1s")
    assert waiting.stderr is not None
    said = waiting.stderr.readline()  # it has looked once, and waits
    assert said.startswith("ai-agent-rollout: waiting for the ramp to end: running, step 1/3")
    assert waiting.poll() is None
    lever_code, _, err = finish(cli(env, "--file", str(live), "ramp", lever, "--reason", "CI"))
    assert lever_code == 0, err
    got, out, err = finish(waiting, timeout=30)
    assert got == code, err
    assert f": {says}, " in out


def test_status_wait_gives_up_after_its_timeout(env: dict[str, str], tmp_path: Path) -> None:
    live = tmp_path / "production.flagd.json"
    shutil.copyfile(FLAGS_DIR / "production.flagd.json", live)
    start(env, str(live))
    got, out, err = finish(
        cli(
            env,
            "--file",
            str(live),
            "ramp",
            "status",
            "--wait",
            "--interval",
            "1s",
            "--timeout",
            "1s",
        )
    )
    assert got == 6 and "running, step 1/3 (1 %)" in out
    assert "timed out after 1s: the ramp is still running (exit 6)" in err
