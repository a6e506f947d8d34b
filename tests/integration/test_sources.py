"""flag_file.sources: every way a flag file changes is noticed; every fault has a clear class."""

from __future__ import annotations

import io
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.response import StreamingBody
from botocore.stub import Stubber

from ai_agent_handler._aws import parse_s3_uri
from ai_agent_handler.exceptions import (
    FlagSourceError,
    SourceAccessDenied,
    SourceNotFound,
    SourceUnavailable,
)
from ai_agent_handler.flag_file.sources import LocalFileSource, S3Source, open_source
from tests.support import BUCKET
from tests.support.flags import CHANGES, dump, rollout, write_atomic

V1 = dump(rollout(version=1))
V2 = dump(rollout(version=2))  # same size as V1: only a digit differs
V3 = dump(rollout(allow=["ep-a"], percent=10, version=3))
assert len(V1) == len(V2) != len(V3)


# -- local files -------------------------------------------------------------------------


@pytest.mark.parametrize("new", [V2, V3], ids=["same-size", "other-size"])
@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_local_source_notices_every_change(
    tmp_path: Path, change: Callable[[Path, bytes], None], new: bytes
) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(V1)
    source = LocalFileSource(path)
    assert source.fetch() == V1
    assert source.fetch() is None
    change(path, new)
    assert source.fetch() == new
    assert source.fetch() is None


def test_touch_without_content_change_is_not_a_change(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(V1)
    source = LocalFileSource(path, rehash_interval=0)
    assert source.fetch() == V1
    os.utime(path, ns=(1, 1))
    write_atomic(path, V1)
    assert source.fetch() is None


@pytest.mark.parametrize(
    ("break_it", "error", "message"),
    [
        (lambda p: p.unlink(), SourceNotFound, "no such file"),
        (lambda p: (p.unlink(), p.mkdir()), FlagSourceError, "is a directory"),
    ],
    ids=["missing", "directory"],
)
def test_local_faults_and_recovery_with_identical_bytes(
    tmp_path: Path, break_it: Callable[[Path], Any], error: type[Exception], message: str
) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(V1)
    source = LocalFileSource(path)
    assert source.fetch() == V1
    break_it(path)
    with pytest.raises(error, match=message):
        source.fetch()
    if path.is_dir():
        path.rmdir()
    path.write_bytes(V1)
    # The same bytes come back: still reported, so a reader can leave its fault state.
    assert source.fetch() == V1


def _fetch_as_nobody(path: Path) -> str:
    """Fetch ``path`` in a forked child that dropped root for user nobody; the outcome."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: everything is imported already, only the user changes
        outcome = "no error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            LocalFileSource(path).fetch()
        except BaseException as err:
            outcome = f"{type(err).__name__} {err}"
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        outcome = pipe.read()
    os.waitpid(pid, 0)
    return outcome


def test_permission_denied(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        path = tmp_path / "flags.json"
        path.write_bytes(V1)
        path.chmod(0)
        with pytest.raises(SourceAccessDenied, match="permission denied"):
            LocalFileSource(path).fetch()
        return
    # root reads a mode-000 file anyway: read it as an unprivileged user instead, from a
    # directory that user can traverse.
    shared = Path(tempfile.mkdtemp(prefix="flag-perm-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        path = shared / "flags.json"
        path.write_bytes(V1)
        path.chmod(0)
        assert _fetch_as_nobody(path) == f"SourceAccessDenied {path}: permission denied"
    finally:
        shutil.rmtree(shared)


# -- S3 ----------------------------------------------------------------------------------

KEY = "phases/staging.flagd.json"
URI = f"s3://{BUCKET}/{KEY}"


def _capture_get_headers(client: Any) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        seen.append(
            {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        )

    client.meta.events.register("before-send.s3.GetObject", record)
    return seen


def test_s3_conditional_get_and_304(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=V1)
    headers = _capture_get_headers(s3)
    source = S3Source(URI, client=s3)
    assert source.fetch() == V1
    assert "If-None-Match" not in headers[0]
    assert source.fetch() is None  # S3 answered 304: nothing downloaded
    etag = s3.head_object(Bucket=BUCKET, Key=KEY)["ETag"]
    assert headers[1]["If-None-Match"] == etag
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=V2)
    assert source.fetch() == V2
    assert source.fetch() is None


def test_s3_missing_object_and_bucket_then_recovery(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=V1)
    source = S3Source(URI, client=s3)
    assert source.fetch() == V1
    s3.delete_object(Bucket=BUCKET, Key=KEY)
    with pytest.raises(SourceNotFound, match="NoSuchKey"):
        source.fetch()
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=V1)  # same bytes, same ETag
    assert source.fetch() == V1
    with pytest.raises(SourceNotFound, match="NoSuchBucket"):
        S3Source(f"s3://no-such-bucket/{KEY}", client=s3).fetch()


def _stubbed() -> tuple[Any, Stubber]:
    client = boto3.client("s3", region_name="us-east-1")
    return client, Stubber(client)


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("AccessDenied", 403, SourceAccessDenied),
        ("InvalidAccessKeyId", 403, SourceAccessDenied),
        ("ExpiredToken", 400, SourceAccessDenied),
        ("NoSuchKey", 404, SourceNotFound),
        ("SlowDown", 503, SourceUnavailable),
        ("Throttling", 400, SourceUnavailable),
        ("RequestTimeout", 400, SourceUnavailable),
        ("InternalError", 500, SourceUnavailable),
    ],
)
def test_s3_error_codes_map_to_clear_classes(code: str, status: int, error: type) -> None:
    client, stub = _stubbed()
    expected = {"Bucket": BUCKET, "Key": KEY, "ExpectedBucketOwner": "111122223333"}
    stub.add_response("get_object", {"Body": _body(V1), "ETag": '"v1"'}, expected_params=expected)
    stub.add_client_error(
        "get_object",
        service_error_code=code,
        http_status_code=status,
        expected_params={**expected, "IfNoneMatch": '"v1"'},
    )
    # After a fault the ETag is forgotten: the next read is unconditional.
    stub.add_response("get_object", {"Body": _body(V1), "ETag": '"v1"'}, expected_params=expected)
    source = S3Source(URI, client=client, expected_bucket_owner="111122223333")
    with stub:
        assert source.fetch() == V1
        with pytest.raises(error, match=f"{URI}: {code}"):
            source.fetch()
        assert source.fetch() == V1
        stub.assert_no_pending_responses()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def _client_at(port: int) -> Any:
    config = Config(connect_timeout=0.3, read_timeout=0.3, retries={"max_attempts": 1})
    return boto3.client(
        "s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}", config=config
    )


def test_s3_read_timeout_is_unavailable(silent_server: int) -> None:
    with pytest.raises(SourceUnavailable, match="Read timeout"):
        S3Source(URI, client=_client_at(silent_server)).fetch()


def test_s3_connection_refused_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends
    with pytest.raises(SourceUnavailable, match="Could not connect"):
        S3Source(URI, client=_client_at(port)).fetch()


@pytest.mark.parametrize("uri", ["s3://", "s3://bucket", "s3://bucket/", "s3:///key", "/x"])
def test_malformed_s3_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="s3://"):
        parse_s3_uri(uri)


def test_open_source_picks_the_kind_and_interval(tmp_path: Path) -> None:
    local = open_source(tmp_path / "f.json")
    assert isinstance(local, LocalFileSource) and local.min_interval == 0.0
    remote = open_source(URI, s3_client=object(), min_interval=30)
    assert isinstance(remote, S3Source) and remote.min_interval == 30
    assert (remote.bucket, remote.key) == (BUCKET, KEY)
    assert open_source(URI).min_interval == 5.0
    assert open_source(local, min_interval=2) is local and local.min_interval == 2
