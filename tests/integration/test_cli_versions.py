"""A live flag file's version only grows: across edits, rollbacks of broken files, files copied
over the live one and re-seeding, on a local file and on S3.

The audit records keep the highest version written, so a file that lost its version (broken,
replaced by an older copy, deleted) continues the sequence; an S3 audit listing that is
refused is named, and nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ai_agent_handler.ops import cli
from ai_agent_handler.ops import store as flag_store
from tests.support.cli import SHIPPED, Runner, one_line_error
from tests.support.live import LiveFile, s3_object, to_version_4

NO_FLAG_V1 = json.dumps({"metadata": {"version": 1}, "flags": {}}).encode()


@pytest.mark.parametrize(
    "broken",
    [b"\x00\xffnot json", b'{"metadata": {"version": 2, "phase": "prod', NO_FLAG_V1],
    ids=["garbage", "truncated", "no-flag-v1"],
)
def test_rollback_of_a_broken_file_continues_the_version_sequence(
    run: Runner, live: LiveFile, broken: bytes
) -> None:
    to_version_4(run, live)
    live.write(broken)
    result = run("--file", live.source, "--json", "rollback", "--reason", "INC-7")
    assert result.code == cli.EXIT_OK, result.err
    assert result.json()["version_after"] == 5
    assert live.version() == 5
    assert [r["version_after"] for r in live.audit()] == [2, 3, 4, 5]


def test_a_file_copied_over_the_live_one_does_not_turn_the_version_back(
    run: Runner, live: LiveFile
) -> None:
    to_version_4(run, live)
    live.write(SHIPPED["production"])  # `aws s3 cp flags/production.flagd.json $PROD` again
    result = run("--file", live.source, "--json", "percent", "30")
    assert result.code == cli.EXIT_OK, result.err
    assert (result.json()["version_before"], result.json()["version_after"]) == (1, 5)
    assert live.version() == 5


def test_seeding_again_after_the_live_file_was_deleted_continues_the_versions(
    run: Runner, live: LiveFile, checkout: Path
) -> None:
    source = str(checkout / "flags" / "production.flagd.json")
    to_version_4(run, live)
    live.write(None)
    result = run("--file", live.source, "--json", "seed", "--from", source)
    assert result.code == cli.EXIT_OK, result.err
    assert (result.json()["changed"], result.json()["version_after"]) == (True, 5)
    assert live.version() == 5


def _deny_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = flag_store._aws.s3_client

    def client(*args: Any, **kwargs: Any) -> Any:
        made = real(*args, **kwargs)

        def refuse(**_: Any) -> None:
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError(error, "ListObjectsV2")  # type: ignore[arg-type]

        made.meta.events.register("before-call.s3.ListObjectsV2", refuse)
        return made

    monkeypatch.setattr(flag_store._aws, "s3_client", client)


def test_a_denied_listing_of_the_s3_audit_records_is_named(
    run: Runner, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = s3_object(s3)
    live.write(SHIPPED["production"])
    _deny_listing(monkeypatch)
    result = run("--file", live.source, "percent", "5")
    assert result.code == cli.EXIT_ERROR, result.err
    line = one_line_error(result)
    assert "s3:ListBucket" in line and "AccessDenied" in line and "nothing written" in line
    assert live.read() == SHIPPED["production"] and live.audit() == []
