"""A fleet shares one flag state: separate processes on one S3 object or one file, and a
flagd provider (``openfeature-provider-flagd``) resolving the same file identically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from openfeature import api

from ai_agent_handler import FLAG_KEY, FlagFileProvider
from tests.support.flags import context, dump, rollout, started, value, write_atomic

# One member of the fleet: answers "<endpoint>" lines with its flag value.
_MEMBER = """
import sys, boto3
from ai_agent_handler import FlagFileProvider
from openfeature.evaluation_context import EvaluationContext

source, endpoint_url = sys.argv[1], sys.argv[2]
client = boto3.client("s3", endpoint_url=endpoint_url) if endpoint_url else None
# Each answer waits for its check (a check on every evaluation): the fleet test is about
# what the members see after a change, not how soon a check lands.
provider = FlagFileProvider(source, s3_client=client, min_interval=0, refresh_wait=10)
provider.initialize(EvaluationContext())
print("ready", flush=True)
for line in sys.stdin:
    endpoint = line.strip()
    ctx = EvaluationContext(targeting_key=endpoint, attributes={"endpoint_id": endpoint})
    details = provider.resolve_boolean_details("composite-partition-key", False, ctx)
    print(details.variant, provider.version, flush=True)
"""


class Member:
    """A separate Python process holding its own FlagFileProvider."""

    def __init__(self, source: str, endpoint_url: str = "") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _MEMBER, source, endpoint_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        )
        assert self.ask_line() == "ready"

    def ask_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, endpoint: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(endpoint + "\n")
        self.proc.stdin.flush()
        return self.ask_line()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


ENDPOINTS = ["aws-prod", "aws-dev", "gcp-eu", "edge-7"]


def _fleet_sees_the_same_change(members: list[Member], change: Any) -> None:
    before = {m.ask(e) for m in members for e in ENDPOINTS}
    assert before == {"legacy 1"}
    change(rollout(allow=["aws-prod", "edge-7"], version=2))
    after = [[m.ask(e) for e in ENDPOINTS] for m in members]
    expected = ["composite 2", "legacy 2", "legacy 2", "composite 2"]
    assert after == [expected] * len(members)


def test_processes_sharing_one_s3_object(moto_server: str) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket="fleet")
    s3.put_object(Bucket="fleet", Key="staging.json", Body=dump(rollout(version=1)))
    members = [Member("s3://fleet/staging.json", moto_server) for _ in range(2)]
    try:
        _fleet_sees_the_same_change(
            members, lambda doc: s3.put_object(Bucket="fleet", Key="staging.json", Body=dump(doc))
        )
    finally:
        for member in members:
            member.close()


def test_processes_sharing_one_file(tmp_path: Path) -> None:
    # The AppConfig agent's writeTo file, an EFS mount: one file, many readers.
    path = tmp_path / "staging.json"
    path.write_bytes(dump(rollout(version=1)))
    members = [Member(str(path)) for _ in range(2)]
    try:
        _fleet_sees_the_same_change(members, lambda doc: write_atomic(path, dump(doc)))
    finally:
        for member in members:
            member.close()


def test_flagd_provider_file_mode_resolves_like_flag_file_provider(tmp_path: Path) -> None:
    flagd = pytest.importorskip("openfeature.contrib.provider.flagd")
    from openfeature.contrib.provider.flagd.config import ResolverType

    path = tmp_path / "staging.json"
    path.write_bytes(dump(rollout(allow=["aws-prod"], percent=25, version=3)))
    ours = FlagFileProvider(path)
    started(ours)
    theirs = flagd.FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=str(path)
    )
    api.set_provider_and_wait(theirs, domain="flagd-file")
    try:
        client = api.get_client("flagd-file")
        endpoints = ["aws-prod", *(f"endpoint-{i}" for i in range(400))]
        mine = {e: value(ours, e) for e in endpoints}
        flagd_says = {e: client.get_boolean_value(FLAG_KEY, False, context(e)) for e in endpoints}
        assert mine == flagd_says
        assert mine["aws-prod"] is True and 60 <= sum(mine.values()) <= 140
    finally:
        api.clear_providers()
