"""The ramp across real processes: concurrent controllers, a controller killed mid-step, a
CI job waiting on the outcome. Those run ``ai-agent-rollout`` as subprocesses; the commands
around them (the ``ramp start`` a test begins with, an operator's lever, the tick after a
crash) run it in this process. S3 and CloudWatch are moto's threaded server on loopback
(``AWS_ENDPOINT_URL``).

No test waits for time to pass: a step's bake is made over by setting the time the store
says the file was written (:func:`tests.support.store_clock.set_modified`); a process says
on standard error when it has reached the point a test waits for, and the processes that
must wait for the test (at their write, between two looks) read a line from standard input
first; a process whose wait must run out has a clock that moves by each nap at once.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from ai_agent_handler.ops import edits
from ai_agent_handler.ops.cli import main as rollout_cli
from ai_agent_handler.ops.store import FlagStore, open_store
from tests.support import BUCKET, FLAGS_DIR, REGION, REPO
from tests.support.store_clock import set_modified

#: A controller that dies at a chosen point of its step (``os._exit``: no cleanup at all):
#: ``before`` the one write of the flag file, or right ``after`` it.
DIES = """
import os, sys
from ai_agent_handler.ops import cli, ramp_io
real = ramp_io.commit
def commit(*args, **kwargs):
    if sys.argv[1] == "before":
        os._exit(9)
    real(*args, **kwargs)
    os._exit(9)
ramp_io.commit = commit
sys.exit(cli.main(sys.argv[2:]))
"""

#: A controller that stops at the one write of the flag file: it says ``at the write`` on
#: standard error, and writes once a line comes on standard input.
AT_THE_WRITE = """
import sys
from ai_agent_handler.ops import cli, ramp_io
real = ramp_io.commit
def commit(*args, **kwargs):
    print("at the write", file=sys.stderr, flush=True)
    sys.stdin.readline()
    return real(*args, **kwargs)
ramp_io.commit = commit
sys.exit(cli.main(sys.argv[1:]))
"""

#: The CLI whose naps (``time.sleep``) are the test's: ``paced``, each nap lasts until a line
#: comes on standard input (or, once that is closed, its real length); ``virtual``, each nap
#: moves the process's monotonic clock on by its length at once.
NAPS = """
import sys, time
from ai_agent_handler.ops import cli
real_sleep = time.sleep
if sys.argv[1] == "paced":
    def nap(seconds):
        if not sys.stdin.readline():
            real_sleep(seconds)
else:
    now = [time.monotonic()]
    def nap(seconds):
        now[0] += seconds
    time.monotonic = lambda: now[0]
time.sleep = nap
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.fixture
def env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of ``ai-agent-rollout``, in a subprocess (returned) and in this one."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AI_AGENT_ROLLOUT_ACTOR", "cron")
    out = dict(os.environ)
    out.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        PYTHONPATH=str(REPO),
    )
    return out


@pytest.fixture
def atomic_s3_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 applies a conditional put (``If-Match``) atomically; moto's server checks the
    condition and stores the object in separate steps, so here it makes one put at a time."""
    from moto.s3.responses import S3Response

    lock = threading.Lock()
    put_object = S3Response.put_object

    def one_at_a_time(self: S3Response) -> Any:
        with lock:
            return put_object(self)

    monkeypatch.setattr(S3Response, "put_object", one_at_a_time)


def cli(
    env: dict[str, str], *argv: str, script: str | None = None, extra: tuple[str, ...] = ()
) -> Any:
    command = (
        [sys.executable, "-c", script, *extra]
        if script
        else [sys.executable, "-m", "ai_agent_handler.ops.cli"]
    )
    return subprocess.Popen(
        [*command, *argv],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def says(process: Any, line: str) -> None:
    """Wait until ``process`` writes ``line`` to standard error (it failed if it ended first)."""
    before = []
    for said in iter(process.stderr.readline, ""):
        if said == line + "\n":
            return
        before.append(said)
    code, out, err = finish(process)
    pytest.fail(f"{line!r} never said; exit {code}\n{out}\n{''.join(before)}{err}")


def go_on(process: Any) -> None:
    """One line on the standard input of ``process``: what it waits for goes on."""
    process.stdin.write("\n")
    process.stdin.flush()


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


def here(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``ai-agent-rollout`` in this process (with the environment of ``env``): its exit code,
    standard output and standard error."""
    capsys.readouterr()
    code = rollout_cli(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def start(capsys: pytest.CaptureFixture[str], live: str) -> None:
    steps = ["--steps", "1,5,25", "--bake", "1h", "--min-decisions", "0"]
    code, _, err = here(capsys, "--file", live, "ramp", "start", *steps)
    assert code == 0, err


def bake_over(store: FlagStore) -> None:
    """The store says the current step was written two hours ago (its bake is one)."""
    two_hours_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
    set_modified(store, two_hours_ago)


@pytest.mark.slow
def test_controllers_ticking_at_once_make_exactly_one_step(
    env: dict[str, str],
    live: str,
    store: FlagStore,
    atomic_s3_puts: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    start(capsys, live)
    bake_over(store)
    controllers = [cli(env, "--file", live, "ramp", "tick", script=AT_THE_WRITE) for _ in range(4)]
    # All four read the file, judged the step and decided to advance before any writes.
    for controller in controllers:
        says(controller, "at the write")
    for controller in controllers:
        go_on(controller)
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
    env: dict[str, str],
    live: str,
    store: FlagStore,
    capsys: pytest.CaptureFixture[str],
    dies: str,
    at: int,
    then: str,
) -> None:
    start(capsys, live)
    bake_over(store)
    code, _, _ = finish(cli(env, "--file", live, "ramp", "tick", script=DIES, extra=(dies,)))
    assert code == 9
    # Killed before its write: nothing happened. After: the step is whole (file and state
    # are one object). Either way the next tick has nothing to finish or wait for.
    assert percent(store) == at
    state = ramp_state(store)
    assert (state["step"], state["status"]) == (0 if at == 1 else 1, "running")
    code, out, err = here(capsys, "--file", live, "ramp", "tick")
    assert code == 0, err
    assert then in out
    assert ramp_actions(store) == ["start", "advance"]
    assert percent(store) == 5


@pytest.mark.parametrize(
    ("lever", "code", "says"),
    [("pause", 5, "paused"), ("abort", 5, "aborted"), ("promote", 0, "done")],
)
def test_status_wait_exits_with_the_ramps_outcome(
    env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lever: str,
    code: int,
    says: str,
) -> None:
    live = tmp_path / "production.flagd.json"
    shutil.copyfile(FLAGS_DIR / "production.flagd.json", live)
    start(capsys, str(live))
    waiting = cli(
        env,
        "--file",
        str(live),
        "ramp",
        "status",
        "--wait",
        "--interval",
        "1s",
        script=NAPS,
        extra=("paced",),
    )
    assert waiting.stderr is not None
    said = waiting.stderr.readline()  # it has looked once, and waits
    assert said.startswith("ai-agent-rollout: waiting for the ramp to end: running, step 1/3")
    assert waiting.poll() is None
    lever_code, _, err = here(capsys, "--file", str(live), "ramp", lever, "--reason", "CI")
    assert lever_code == 0, err
    go_on(waiting)  # its nap is over: it looks again
    got, out, err = finish(waiting, timeout=30)
    assert got == code, err
    assert f": {says}, " in out


def test_status_wait_gives_up_after_its_timeout(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = tmp_path / "production.flagd.json"
    shutil.copyfile(FLAGS_DIR / "production.flagd.json", live)
    start(capsys, str(live))
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
            script=NAPS,
            extra=("virtual",),
        )
    )
    assert got == 6 and "running, step 1/3 (1 %)" in out
    assert "timed out after 1s: the ramp is still running (exit 6)" in err
