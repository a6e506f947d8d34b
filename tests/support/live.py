"""A live production flag file, a local file or an S3 object (moto), and the test's raw access
to it: its bytes, its audit records, a way to make its audit fail.

:func:`local_file` and :func:`s3_object` give the same :class:`LiveFile`, so one test runs on
both; the ``live`` fixture (``conftest.py``) is one of each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ai_agent_handler.ops import cli, edits
from ai_agent_handler.ops.store import FlagStore, LocalFileStore, S3Store

from . import BUCKET
from .cli import SHIPPED, Runner, audit_records
from .flags import disk_full_for

__all__ = [
    "PROD_KEY",
    "LiveFile",
    "local_file",
    "s3_audit_records",
    "s3_object",
    "to_version_4",
]

#: The key of the production flag file in :data:`tests.support.BUCKET`.
PROD_KEY = "ai-agent/production.flagd.json"


class LiveFile:
    """A flag file's store (``source`` is what ``--file`` takes), and raw access to it."""

    def __init__(
        self,
        store: FlagStore,
        read: Callable[[], bytes | None],
        write: Callable[[bytes | None], None],
        audit: Callable[[], list[dict[str, Any]]],
        fail_audit: Callable[[pytest.MonkeyPatch], None],
    ) -> None:
        self.store, self.source = store, store.source
        self.read, self.write, self.audit, self.fail_audit = read, write, audit, fail_audit

    def doc(self) -> dict[str, Any]:
        """The file's document (the file must exist)."""
        data = self.read()
        assert data is not None
        return dict(json.loads(data))

    def version(self) -> int | None:
        return edits.version_of(self.doc())


def local_file(folder: Path, data: bytes | None = None) -> LiveFile:
    """``folder/production.flagd.json`` holding ``data`` (None: no file yet).

    ``fail_audit``: appending to its audit log fails with a full disk.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "production.flagd.json"
    log = path.with_name(path.name + ".audit.jsonl")

    def write(data: bytes | None) -> None:
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)

    def fail_audit(monkeypatch: pytest.MonkeyPatch) -> None:
        disk_full_for(monkeypatch, log)

    if data is not None:
        write(data)
    return LiveFile(
        LocalFileStore(path, lock_timeout=1),
        lambda: path.read_bytes() if path.exists() else None,
        write,
        lambda: audit_records(path),
        fail_audit,
    )


def s3_audit_records(client: Any, key: str) -> list[dict[str, Any]]:
    """The audit records of the object ``key`` (one object each under ``key.audit/``), in key
    order."""
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{key}.audit/")
    keys = sorted(item["Key"] for item in listed.get("Contents", []))
    return [json.loads(client.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys]


def s3_object(client: Any, data: bytes | None = None, key: str = PROD_KEY) -> LiveFile:
    """The object ``key`` in :data:`~tests.support.BUCKET` holding ``data`` (None: no object
    yet), its store on ``client``.

    ``fail_audit``: ``client`` refuses to put an audit object (and only those).
    """

    def read() -> bytes | None:
        try:
            return bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except client.exceptions.NoSuchKey:
            return None

    def write(data: bytes | None) -> None:
        if data is None:
            client.delete_object(Bucket=BUCKET, Key=key)
        else:
            client.put_object(Bucket=BUCKET, Key=key, Body=data)

    def fail_audit(monkeypatch: pytest.MonkeyPatch) -> None:
        real_put = client.put_object

        def put_object(**kwargs: Any) -> Any:
            if ".audit/" in kwargs["Key"]:
                error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
                raise ClientError(error, "PutObject")  # type: ignore[arg-type]
            return real_put(**kwargs)

        monkeypatch.setattr(client, "put_object", put_object)

    if data is not None:
        write(data)
    return LiveFile(
        S3Store(f"s3://{BUCKET}/{key}", client=client),
        read,
        write,
        lambda: s3_audit_records(client, key),
        fail_audit,
    )


def to_version_4(run: Runner, live: LiveFile) -> None:
    """``live`` becomes the shipped production file (version 1), then three changes through
    the CLI take it to version 4, each audited."""
    live.write(SHIPPED["production"])
    for argv in (["allow", "ep-a"], ["percent", "10"], ["percent", "20"]):
        result = run("--file", live.source, *argv, "--reason", "CHG-1")
        assert result.code == cli.EXIT_OK, result.err
    assert live.version() == 4
