"""Runs under concurrency while the flag file keeps changing underneath them.

Eight threads drive runs through their own handlers (as an engine serving concurrent
requests does) while another thread rewrites the live flag file dozens of times: flips,
percentage changes, allow-list changes, and corrupt-then-repair (in-place truncating
writes a reader can catch half done). All calls go over real HTTP to a loopback Lambda
stand-in that records them.

Checked: every run used exactly one key for all its calls, the key the handler decided;
no exception escaped a thread; no call was lost (the stand-in received exactly the calls
made); one decision record per run.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from openfeature import api

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, AIAgentEventHandler, FlagFileProvider
from tests.support.aws import EmfCapture
from tests.support.fault_server import FaultServer

THREADS = 8
MIN_RUNS_PER_THREAD = 40
MIN_REWRITES = 48
CHUNKS = 4  # plus the message end
CALLS_PER_RUN = 2 + CHUNKS + 1  # create_run, chunks, message end, update_run
ENDPOINTS = [f"ep-{n:02d}" for n in range(16)]


def _doc(version: int, *, default: str = "legacy", allow: list[str], percent: int) -> bytes:
    targeting = {
        "if": [
            {"in": [{"var": "endpoint_id"}, allow]},
            "composite",
            {
                "fractional": [
                    {"cat": ["pk-rollout-", {"var": "targetingKey"}]},
                    ["composite", percent],
                    ["legacy", 100 - percent],
                ]
            },
        ]
    }
    flag: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"composite": True, "legacy": False},
        "defaultVariant": default,
    }
    if default == "legacy":
        flag["targeting"] = targeting
    doc = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "metadata": {"flagSetId": "ai_agent_handler", "phase": "staging", "version": version},
        "flags": {FLAG_KEY: flag},
    }
    return json.dumps(doc, indent=2).encode()


class Rewriter(threading.Thread):
    """Rewrites the flag file until told to stop (and at least MIN_REWRITES times)."""

    def __init__(self, path: Path, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.path, self.stop = path, stop
        self.writes = 0
        self.corruptions = 0
        self.error: BaseException | None = None
        self.done_minimum = threading.Event()

    def run(self) -> None:
        try:
            version = 1
            while not (self.stop.is_set() and self.writes >= MIN_REWRITES):
                step = self.writes % 6
                version += 1
                if step == 0:  # flip everything on
                    data = _doc(version, default="composite", allow=[], percent=0)
                elif step == 1:  # percentage change
                    data = _doc(version, allow=[], percent=(version * 17) % 101)
                elif step == 2:  # allow-list change
                    data = _doc(version, allow=ENDPOINTS[: version % 8], percent=10)
                elif step == 3:  # corrupt, in place and truncating: half a file
                    good = _doc(version, allow=[], percent=50)
                    data = good[: len(good) // 2]
                    self.corruptions += 1
                elif step == 4:  # repair it
                    data = _doc(version, allow=[], percent=50)
                else:  # flip everything off (the rollback)
                    data = _doc(version, allow=[], percent=0)
                if step in (3, 4):
                    with open(self.path, "wb") as fh:  # in place: readers may see it half done
                        fh.write(data)
                else:
                    tmp = self.path.with_name(f".{self.path.name}.{version}.tmp")
                    tmp.write_bytes(data)
                    os.replace(tmp, self.path)  # atomic, as the CLI writes
                self.writes += 1
                if self.writes >= MIN_REWRITES:
                    self.done_minimum.set()
                self.stop.wait(0.002)  # yield to the workers between writes
        except BaseException as err:
            self.error = err
            self.done_minimum.set()


@pytest.fixture
def flag_file(tmp_path: Path) -> Path:
    path = tmp_path / "staging.flagd.json"
    path.write_bytes(_doc(1, allow=ENDPOINTS[:4], percent=25))
    return path


def test_runs_keep_one_key_while_the_flag_file_churns(
    flag_file: Path,
    fault_server: FaultServer,
    emf: EmfCapture,
) -> None:
    provider = FlagFileProvider(flag_file, min_interval=0)  # check the file on every run
    api.set_provider_and_wait(provider, domain=FLAG_DOMAIN)
    # Room for the stream workers and the eight threads on one client.
    lambda_client = _with_pool(fault_server, 48)

    stop = threading.Event()
    rewriter = Rewriter(flag_file, stop)
    decided: dict[str, str] = {}  # run_uuid -> routing key the handler decided
    decided_lock = threading.Lock()
    errors: list[BaseException] = []
    runs_done = [0] * THREADS

    def worker(number: int) -> None:
        try:
            handler = AIAgentEventHandler(
                logging.getLogger("test.concurrency"),
                {"agent_name": "t"},
                aws_lambda=lambda_client,
                rollout_phase="staging",
            )
            handler.connection_id = f"conn-{number}"
            run = 0
            while run < MIN_RUNS_PER_THREAD or not rewriter.done_minimum.is_set():
                endpoint = ENDPOINTS[(number * 7 + run) % len(ENDPOINTS)]
                run_uuid = f"t{number}-r{run}"
                handler.endpoint_id = endpoint
                handler.part_id = f"part-{number}"
                handler.run = {
                    "run_uuid": run_uuid,
                    "updated_by": "u",
                    "thread": {"thread_uuid": f"thread-{number}"},
                }
                handler.invoke_async_funct("create_run")
                for index in range(CHUNKS):
                    handler.send_data_to_stream(index=index, chunk_delta=f"c{index}")
                handler.send_data_to_stream(index=CHUNKS, is_message_end=True)
                handler.invoke_async_funct("update_run", status="completed")
                assert handler.key_decision is not None
                with decided_lock:
                    decided[run_uuid] = handler.key_decision.routing_key
                run += 1
            runs_done[number] = run
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(THREADS)]
    rewriter.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stop.set()
    rewriter.join(timeout=30)
    fault_server.settle()

    assert not [t for t in threads if t.is_alive()], "a worker hung"
    assert errors == []  # no exception escaped
    assert rewriter.error is None
    assert rewriter.writes >= MIN_REWRITES

    runs = sum(runs_done)
    assert len(decided) == runs

    by_run: dict[str, list[Any]] = defaultdict(list)
    for request in fault_server.requests:
        assert request.accepted
        params = request.body_params()
        run_uuid = (
            params.get("run_uuid")
            or json.loads(params["data"])["message_group_id"].split("-", 2)[2]
        )
        by_run[run_uuid].append(request)

    # No call lost, none invented: exactly the calls made, per run.
    assert set(by_run) == set(decided)
    assert {run: len(calls) for run, calls in by_run.items()} == dict.fromkeys(
        decided, CALLS_PER_RUN
    )
    # One key per run, and it is the key the handler decided for that run.
    for run_uuid, calls in by_run.items():
        keys = {call.key for call in calls}
        assert keys == {decided[run_uuid]}, (run_uuid, keys)
        schemes = {call.body["key_scheme"] for call in calls}
        assert schemes == {"composite" if "#" in decided[run_uuid] else "legacy"}
    # One decision record (EMF line) per run.
    assert emf.total("KeyDecisions") == runs

    composite = sum("#" in key for key in decided.values())
    print(
        f"\nconcurrency: {THREADS} threads, {runs} runs, {len(fault_server.requests)} calls, "
        f"{rewriter.writes} flag-file rewrites ({rewriter.corruptions} corrupt), "
        f"{composite} composite / {runs - composite} legacy runs"
    )


def _with_pool(server: FaultServer, connections: int) -> Any:
    import boto3

    from ai_agent_handler._aws import RETRY_CONFIG

    config = RETRY_CONFIG.merge(Config(max_pool_connections=connections, read_timeout=30))
    return boto3.client("lambda", region_name="us-east-1", endpoint_url=server.url, config=config)
