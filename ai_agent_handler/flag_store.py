"""Where ``ai-agent-rollout`` reads and writes a flag file: a local path or an S3 object.

The guarantees an operator relies on, per kind of store:

* **Local file.** Every change happens under an exclusive ``fcntl.flock`` on
  ``<file>.lock`` (next to the file), held from the read to the audit record, so two
  operators never lose each other's change. The new bytes go to a temporary file in the same
  directory, are fsynced, renamed over the file with ``os.replace`` (atomic on POSIX) and the
  directory is fsynced: a reader -- and a crash -- sees the old file or the new one, never a
  mix. The audit record is one JSON line appended (and fsynced) to ``<file>.audit.jsonl``.
* **S3 object.** S3 has no locks; the object is read with its ETag and written with
  ``put_object(IfMatch=<etag>)`` (``IfNoneMatch="*"`` when it did not exist), so a change
  made by someone else in between is refused with :class:`ConflictError`, never overwritten.
  Audit records are separate objects ``<key>.audit/<version>-<time>-<id>.json`` next to it
  (S3 cannot append, and one object per record cannot conflict).

``audit_log=PATH`` sends the records of either store to a local JSON-lines file instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "ConflictError",
    "FlagStore",
    "LocalFileStore",
    "S3Store",
    "Snapshot",
    "StoreError",
    "open_store",
    "parse_s3_uri",
]

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class StoreError(Exception):
    """Reading or writing the flag file failed; the message is one line for the operator."""


class ConflictError(StoreError):
    """Someone else changed (or is changing) the file; nothing was written."""


@dataclass(frozen=True)
class Snapshot:
    """The bytes read (None when the file does not exist) and what a write must match."""

    data: bytes | None
    etag: str | None = None


class FlagStore(Protocol):
    """A flag file that can be read, changed atomically and audited."""

    source: str
    audit_location: str

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold off other writers (through the audit record)."""
        ...

    def read(self) -> Snapshot:
        """The current bytes."""
        ...

    def write(self, data: bytes, snapshot: Snapshot) -> None:
        """Replace the file with ``data`` if it is still what ``snapshot`` saw."""
        ...

    def append_audit(self, record: Mapping[str, Any]) -> None:
        """Keep one audit record for a change just written."""
        ...


def _audit_line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _append_line(path: Path, line: bytes) -> None:
    # O_APPEND: each record lands whole at the end even if another writer appends too.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse fsync on a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalFileStore:
    """A flag file on a local filesystem (or EFS), changed under ``flock`` and atomically."""

    def __init__(
        self, path: str | os.PathLike[str], *, audit_log: str | None = None, lock_timeout: float
    ) -> None:
        self.path = Path(path)
        self.source = str(self.path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        audit = (
            Path(audit_log) if audit_log else self.path.with_name(self.path.name + ".audit.jsonl")
        )
        self.audit_path = audit
        self.audit_location = str(audit)
        self.lock_timeout = lock_timeout

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive ``flock`` on ``<file>.lock``; :class:`ConflictError` after the timeout."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(f"cannot open lock file {self.lock_path}: {err.strerror}") from err
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES):
                        raise StoreError(f"cannot lock {self.lock_path}: {err.strerror}") from err
                    if time.monotonic() >= deadline:
                        raise ConflictError(
                            f"{self.source} is being changed by another operator "
                            f"(lock {self.lock_path} held for {self.lock_timeout:g} s); "
                            "nothing written, try again"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def read(self) -> Snapshot:
        """The file's bytes; ``Snapshot(None)`` when it does not exist."""
        try:
            return Snapshot(self.path.read_bytes())
        except FileNotFoundError:
            return Snapshot(None)
        except OSError as err:
            raise StoreError(f"cannot read {self.source}: {err.strerror}") from err

    def _remove_stale_temp_files(self, target: Path) -> None:
        # Called under the lock: a temp file still there belongs to a writer that died
        # between writing and renaming (its change never happened).
        for leftover in target.parent.glob(f".{target.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def write(self, data: bytes, snapshot: Snapshot) -> None:
        """Temp file in the same directory, fsync, ``os.replace``, fsync the directory.

        A symlinked flag file (a ConfigMap, a deploy tool's link) keeps its link: the
        target is replaced, next to the target.
        """
        target = self.path.resolve() if self.path.is_symlink() else self.path
        directory = target.parent
        self._remove_stale_temp_files(target)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except OSError:
            mode = 0o644
        try:
            fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as err:
            raise StoreError(f"cannot write next to {self.source}: {err.strerror}") from err
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, mode)  # mkstemp creates 0600; keep the file readable as before
            os.replace(temp, target)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(err, OSError):
                raise StoreError(f"cannot write {self.source}: {err.strerror or err}") from err
            raise
        _fsync_dir(directory)

    def append_audit(self, record: Mapping[str, Any]) -> None:
        """One JSON line, appended and fsynced."""
        try:
            _append_line(self.audit_path, _audit_line(record))
        except OSError as err:
            raise StoreError(
                f"cannot append the audit record to {self.audit_path}: {err.strerror}"
            ) from err


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``("bucket", "key")`` from ``s3://bucket/key``; :class:`StoreError` otherwise."""
    rest = uri[len("s3://") :] if uri.startswith("s3://") else ""
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise StoreError(f"not an S3 object URI (s3://bucket/key): {uri!r}")
    return bucket, key


def _describe(err: ClientError) -> str:
    message = err.response.get("Error", {}).get("Message") or str(err)
    return f"{_code(err)}: {message}"


def _code(err: ClientError) -> str:
    error = err.response.get("Error", {})
    return str(error.get("Code") or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


class S3Store:
    """A flag file in S3, changed with a conditional put on the ETag it was read with."""

    def __init__(self, uri: str, *, client: Any = None, audit_log: str | None = None) -> None:
        self.source = uri
        self.bucket, self.key = parse_s3_uri(uri)
        self._client = client
        self.audit_path = Path(audit_log) if audit_log else None
        self.audit_location = (
            str(self.audit_path) if self.audit_path else f"s3://{self.bucket}/{self.key}.audit/"
        )

    @property
    def client(self) -> Any:
        """The injected boto3 S3 client, else one built on first use."""
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """No lock: the conditional put in :meth:`write` refuses concurrent changes."""
        return contextlib.nullcontext()

    def read(self) -> Snapshot:
        """The object's bytes and ETag; ``Snapshot(None)`` when it does not exist."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            return Snapshot(response["Body"].read(), response["ETag"])
        except ClientError as err:
            if _code(err) in _MISSING_CODES:
                return Snapshot(None)
            raise StoreError(f"cannot read {self.source}: {_describe(err)}") from err
        except BotoCoreError as err:
            raise StoreError(f"cannot read {self.source}: {err}") from err

    def write(self, data: bytes, snapshot: Snapshot) -> None:
        """``put_object`` with ``IfMatch`` (or ``IfNoneMatch="*"`` for a new object)."""
        condition = {"IfMatch": snapshot.etag} if snapshot.etag else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=data,
                ContentType="application/json",
                **condition,
            )
        except ClientError as err:
            if _code(err) in _CONFLICT_CODES:
                raise ConflictError(
                    f"{self.source} was changed by someone else since it was read "
                    f"(ETag {snapshot.etag or 'none'}); nothing written, run the command again"
                ) from err
            raise StoreError(f"cannot write {self.source}: {_describe(err)}") from err
        except BotoCoreError as err:
            raise StoreError(f"cannot write {self.source}: {err}") from err

    def append_audit(self, record: Mapping[str, Any]) -> None:
        """A new object under ``<key>.audit/`` (or a line in the local ``audit_log``)."""
        line = _audit_line(record)
        if self.audit_path is not None:
            try:
                _append_line(self.audit_path, line)
            except OSError as err:
                raise StoreError(
                    f"cannot append the audit record to {self.audit_path}: {err.strerror}"
                ) from err
            return
        version = record.get("version_after")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{self.key}.audit/{version!s:>010}-{stamp}-{uuid.uuid4().hex[:8]}.json"
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=name,
                Body=line,
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except (ClientError, BotoCoreError) as err:
            raise StoreError(
                f"cannot write the audit record s3://{self.bucket}/{name}: {err}"
            ) from err


def open_store(
    source: str, *, s3_client: Any = None, audit_log: str | None = None, lock_timeout: float = 10.0
) -> FlagStore:
    """The store for ``source``: an ``s3://bucket/key`` URI or a filesystem path."""
    if source.startswith("s3://"):
        return S3Store(source, client=s3_client, audit_log=audit_log)
    return LocalFileStore(source, audit_log=audit_log, lock_timeout=lock_timeout)
