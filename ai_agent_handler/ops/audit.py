"""The audit trail of a flag file: one record per change, where records are kept, reading them.

* A **record** (:func:`record`) says who changed the file, with which command, when and
  why, the rollout and ``metadata.version`` before and after; a ramp's records add its
  trigger and evidence. :func:`line` is its one serialized form: one JSON line for every
  reader (the characters ``str.splitlines()`` breaks at are escaped, the rest stays readable
  UTF-8).
* **Where**: next to a local file the JSON-lines log ``<resolved file>.audit.jsonl``
  (:func:`log_path`), appended whole under ``flock`` and fsynced (:class:`LocalLog`); next
  to an S3 object one object per record, ``<key>.audit/<version>-<time>-<id>.json``
  (:class:`S3Objects`: S3 cannot append, and one object per record cannot conflict). Any
  store may send its records to a shared local log instead (``audit_log``); a record's
  ``file`` then tells whose it is (:func:`names`).
* **Reading back**: :func:`read_log` (records of a local log, optionally only its end) and
  :func:`s3_entries` (the version and time of each record object, from the listing alone);
  :func:`highest_version` and :func:`newest_time` of either.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _aws
from ..exceptions import StoreError
from . import times

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from .edits import RolloutState

#: The characters str.splitlines() breaks a line at, as JSON escapes. json.dumps escapes the
#: ASCII ones itself; U+0085, U+2028 and U+2029 it leaves raw (with ensure_ascii=False).
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
#: An audit object's name under ``<key>.audit/``: the version it wrote, zero-padded, first.
_OBJECT_NAME = re.compile(r"(\d{1,18})-")


def record(
    *,
    actor: str,
    command: str,
    phase: str | None,
    source: str,
    before: RolloutState | None,
    after: RolloutState,
    version_before: int | None,
    version_after: int | None,
    reason: str | None,
    etag: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One audit record; ``details`` add fields (a ramp's trigger and evidence)."""
    made: dict[str, Any] = {
        "time": times.iso(times.utcnow(), ms=True),
        "actor": actor,
        "command": command,
        "phase": phase,
        "file": source,
        "before": before.to_json() if before else None,
        "after": after.to_json(),
        "version_before": version_before,
        "version_after": version_after,
        "reason": reason,
    }
    if etag:
        made["etag_before"] = etag
    made.update(details or {})
    return made


def line(made: Mapping[str, Any]) -> bytes:
    """The record as one line of UTF-8 JSON, ending in a newline."""
    # Those characters can only occur inside JSON strings, where the escape means the same.
    # A lone surrogate (an undecodable byte of a command line) becomes its JSON escape too.
    text = json.dumps(made, sort_keys=True, ensure_ascii=False).translate(_LINE_BREAKS)
    return (text + "\n").encode("utf-8", "backslashreplace")


def log_path(flag_file: str | os.PathLike[str]) -> Path:
    """The JSON-lines log beside a local flag file: ``<resolved file>.audit.jsonl``."""
    target = Path(os.path.realpath(flag_file))
    return target.with_name(target.name + ".audit.jsonl")


def names(source: str) -> Callable[[object], bool]:
    """Whether a record's ``file`` names the flag file ``source``: the same spelling, the
    same resolved path, or the same S3 bucket and key."""
    if _aws.is_s3_uri(source):
        place: object = _s3_place(source)
    else:
        place = os.path.realpath(source)

    def named(file: object) -> bool:
        if not isinstance(file, str):
            return False
        if file == source:
            return True
        if _aws.is_s3_uri(file):
            return _s3_place(file) == place
        return os.path.realpath(file) == place

    return named


def _s3_place(uri: str) -> tuple[str, str] | None:
    try:
        return _aws.parse_s3_uri(uri)
    except ValueError:
        return None


# -- keeping records ---------------------------------------------------------------------------


class LocalLog:
    """A local JSON-lines audit log, open (``fd``) for appending."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def append(self, made: Mapping[str, Any]) -> None:
        """One line, appended whole (``O_APPEND``, and ``flock`` against other flag files
        sharing the log) and fsynced; a line that fails half-way is cut off again."""
        data = line(made)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                end = os.fstat(self.fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(self.fd, view) :]
                    os.fsync(self.fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(self.fd, end)
                    raise
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError as err:
            raise StoreError(
                f"cannot append the audit record to {self.path}: {err.strerror or err}"
            ) from err


class S3Objects:
    """The records of ``s3://bucket/key``: objects ``<key>.audit/<version>-<time>-<id>.json``."""

    def __init__(self, client: S3Client, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key

    def append(self, made: Mapping[str, Any]) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        version = made.get("version_after")
        name = f"{self.key}.audit/{version!s:>010}-{stamp}-{uuid.uuid4().hex[:8]}.json"
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=name,
                Body=line(made),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except _aws.ERRORS as err:
            raise StoreError(
                f"cannot write the audit record s3://{self.bucket}/{name}: {_aws.describe(err)}"
            ) from err


# -- reading them back -------------------------------------------------------------------------


def read_log(
    path: Path, belongs: Callable[[object], bool] | None = None, *, tail: int | None = None
) -> Iterator[dict[str, Any]]:
    """The records of the JSON-lines log ``path`` (those whose ``file`` ``belongs``
    accepts), oldest first; with ``tail``, only those in its last ``tail`` bytes. A line that
    is not a record (cut off by a crash) is passed over. Reading errors raise ``OSError``."""
    for raw in log_lines(path, tail=tail):
        try:
            found = json.loads(raw)
        except ValueError:
            continue
        if isinstance(found, dict) and (belongs is None or belongs(found.get("file"))):
            yield found


def log_lines(path: Path, *, tail: int | None = None) -> Iterator[bytes]:
    """The lines of the JSON-lines log ``path``, oldest first; with ``tail``, only the whole
    lines in its last ``tail`` bytes.

    A missing log, a symlink (a change refuses to append through one) or something that is
    not a file has no lines. Reading errors raise ``OSError``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if isinstance(err, FileNotFoundError) or err.errno == errno.ELOOP:
            return
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return
    with os.fdopen(fd, "rb") as log:
        start = max(0, log.seek(0, os.SEEK_END) - tail) if tail else 0
        log.seek(start)
        lines = iter(log)
        if start:
            next(lines, None)  # cut by the tail
        yield from lines


@dataclass(frozen=True)
class Entry:
    """One record object, as its listing tells: the version it wrote and when."""

    version: int | None
    modified: datetime.datetime | None


def s3_entries(client: S3Client, bucket: str, key: str) -> Iterator[Entry]:
    """The record objects under ``<key>.audit/`` from the listing alone (``s3:ListBucket``);
    botocore's errors propagate."""
    prefix = f"{key}.audit/"
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            match = _OBJECT_NAME.match(item.get("Key", "")[len(prefix) :])
            modified = item.get("LastModified")
            yield Entry(
                int(match.group(1)) if match else None,
                times.utc(modified) if modified is not None else None,
            )


def highest_version(found: Iterable[Mapping[str, Any] | Entry]) -> int | None:
    """The highest ``metadata.version`` records name (before or after the change)."""
    versions: list[int] = []
    for item in found:
        if isinstance(item, Entry):
            versions += [item.version] if item.version is not None else []
            continue
        versions += [
            v
            for v in (item.get("version_before"), item.get("version_after"))
            if isinstance(v, int) and not isinstance(v, bool)
        ]
    return max(versions, default=None)


def newest_time(found: Iterable[Mapping[str, Any] | Entry]) -> datetime.datetime | None:
    """The newest time of the records (a local record's ``time``, an object's listing time)."""
    moments = [
        item.modified if isinstance(item, Entry) else times.parse_iso(item.get("time"))
        for item in found
    ]
    return max((moment for moment in moments if moment is not None), default=None)
