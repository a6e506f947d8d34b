"""The ramp across real processes: concurrent controllers, a controller killed mid-step, a
CI job waiting on the outcome. ``ai-agent-rollout`` runs as subprocesses; S3 and CloudWatch
are moto's threaded server on loopback (``AWS_ENDPOINT_URL``)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from ai_agent_handler.ops import edits
from ai_agent_handler.ops.ramp import LEASE_SECONDS
from ai_agent_handler.ops.ramp_control import Ramp
from ai_agent_handler.ops.store import open_store
from tests.support import BUCKET, FLAGS_DIR, REGION, REPO

#: Imports first, then waits for a common start time: the controllers really tick at once.
AT_ONCE = """
import sys, time
from ai_agent_handler.ops import cli
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
sys.exit(cli.main(sys.argv[2:]))
"""

#: A controller that dies at a chosen point of a step (``os._exit``: no cleanup at all).
DIES = """
import os, sys
from ai_agent_handler.ops import cli
from ai_agent_handler.ops.ramp import LEASE_SECONDS
from ai_agent_handler.ops.ramp_control import Ramp
setattr(Ramp, sys.argv[1], lambda *a, **k: os._exit(9))
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


def store_of(live: str, moto_server: str) -> Any:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server)
    return open_store(live, s3_client=s3)


def records(store: Any) -> list[dict[str, Any]]:
    location = store.audit_location
    if location.startswith("s3://"):
        bucket, prefix = location[5:].split("/", 1)
        listed = store.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        got = [
            json.loads(store.client.get_object(Bucket=bucket, Key=i["Key"])["Body"].read())
            for i in listed
        ]
        return sorted(got, key=lambda r: r["time"])
    return [json.loads(line) for line in Path(location).read_text().splitlines()]


def percent(store: Any) -> int | None:
    data = store.read().data
    return edits.read_state(json.loads(data)).percent


def ramp_of(store: Any, moto_server: str) -> Ramp:
    cw = boto3.client("cloudwatch", region_name=REGION, endpoint_url=moto_server)
    return Ramp(store, actor="test", cloudwatch_client=cw)


def start(env: dict[str, str], live: str, bake: str = "1s") -> None:
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


def test_controllers_ticking_at_once_make_exactly_one_step(
    env: dict[str, str], live: str, moto_server: str
) -> None:
    start(env, live)
    time.sleep(1.2)  # the first step has baked
    at = f"{time.time() + 3.0}"
    controllers = [
        cli(env, "--file", live, "ramp", "tick", script=AT_ONCE, extra=(at,)) for _ in range(4)
    ]
    results = [finish(c) for c in controllers]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err for _, _, err in results]
    store = store_of(live, moto_server)
    assert percent(store) == 5
    actions = [r["ramp"]["action"] for r in records(store) if "ramp" in r]
    assert actions == ["start", "advance"]
    advanced = [out for _, out, _ in results if "advanced to step 2/3 (5 %)" in out]
    assert len(advanced) == 1, [out for _, out, _ in results]
    _, state = ramp_of(store, moto_server).read()
    assert state is not None and (state.step, state.status, state.pending) == (1, "running", None)


def test_a_controller_killed_between_the_flag_write_and_the_state_write_is_finished(
    env: dict[str, str], live: str, moto_server: str
) -> None:
    start(env, live)
    time.sleep(1.2)
    code, _, _ = finish(
        cli(env, "--file", live, "ramp", "tick", script=DIES, extra=("_finish_step",))
    )
    assert code == 9
    store = store_of(live, moto_server)
    assert percent(store) == 5  # the flag file was written...
    _, state = ramp_of(store, moto_server).read()
    assert state is not None and state.pending is not None and state.step == 0  # ...the state not
    version = edits.version_of(json.loads(store.read().data))
    code, out, err = finish(cli(env, "--file", live, "ramp", "tick"))
    assert code == 0, err
    assert "advanced to step 2/3 (5 %): finished: step 2 (5 %) was written by cron@" in out
    _, state = ramp_of(store, moto_server).read()
    assert state is not None and (state.step, state.pending, state.flag_version) == (
        1,
        None,
        version,
    )
    assert edits.version_of(json.loads(store.read().data)) == version  # not written twice
    assert [r["ramp"]["action"] for r in records(store) if "ramp" in r] == ["start", "advance"]
    # And the ramp goes on from there.
    time.sleep(1.2)
    code, out, _ = finish(cli(env, "--file", live, "ramp", "tick"))
    assert code == 0 and "advanced to step 3/3 (25 %)" in out


def test_a_controller_killed_before_the_flag_write_is_forgotten_after_its_lease(
    env: dict[str, str], live: str, moto_server: str
) -> None:
    start(env, live)
    time.sleep(1.2)
    code, _, _ = finish(
        cli(env, "--file", live, "ramp", "tick", script=DIES, extra=("_write_flag",))
    )
    assert code == 9
    store = store_of(live, moto_server)
    assert percent(store) == 1
    code, out, _ = finish(cli(env, "--file", live, "ramp", "tick"))
    assert code == 0 and "is applying step 2 (5 %)" in out  # its lease still runs
    assert percent(store) == 1
    ramp = ramp_of(store, moto_server)
    _, state = ramp.read()
    assert state is not None and state.pending is not None
    after_lease = state.pending.at + datetime.timedelta(seconds=LEASE_SECONDS + 1)
    ramp.clock = lambda: after_lease
    outcome = ramp.tick()
    assert outcome.action.kind == "advance" and percent(store) == 5
    assert [r["ramp"]["action"] for r in records(store) if "ramp" in r] == ["start", "advance"]


@pytest.mark.parametrize(
    ("lever", "code", "says"),
    [("pause", 5, "paused"), ("abort", 5, "aborted"), ("promote", 0, "done")],
)
def test_status_wait_exits_with_the_ramps_outcome(
    env: dict[str, str], tmp_path: Path, moto_server: str, lever: str, code: int, says: str
) -> None:
    live = tmp_path / "production.flagd.json"
    shutil.copyfile(FLAGS_DIR / "production.flagd.json", live)
    start(env, str(live), bake="1h")
    waiting = cli(env, "--file", str(live), "ramp", "status", "--wait", "--interval", "1s")
    time.sleep(1.5)
    assert waiting.poll() is None  # still running: it waits
    lever_code, _, err = finish(cli(env, "--file", str(live), "ramp", lever, "--reason", "CI"))
    assert lever_code == 0, err
    got, out, err = finish(waiting, timeout=30)
    assert got == code, err
    assert f": {says}, " in out


def test_status_wait_gives_up_after_its_timeout(env: dict[str, str], tmp_path: Path) -> None:
    live = tmp_path / "production.flagd.json"
    shutil.copyfile(FLAGS_DIR / "production.flagd.json", live)
    start(env, str(live), bake="1h")
    got, out, _ = finish(
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
            "2s",
        )
    )
    assert got == 6 and "running, step 1/3 (1 %)" in out
