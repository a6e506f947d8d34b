"""An operator's change to a flag file, as one transaction: :func:`commit`.

``commit(store, edit, ...)`` holds the store's lock, reads the file, applies a pure edit
(:mod:`.edits`), bumps ``metadata.version``, validates what will be written, writes it
atomically and appends one audit record, and returns a :class:`Change` saying what
happened. An edit that changes nothing writes nothing. The stores are where the file is:
a local path or an S3 object. The guarantees an operator relies on, per kind of store:

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
import datetime
import errno
import fcntl
import json
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .. import _aws
from ..exceptions import ConflictError, FlagEditError, FlagFileError, StoreError
from ..flag_file.document import parse, serialize, validate
from . import edits
from .edits import RolloutState

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "Change",
    "Edit",
    "FlagStore",
    "LocalFileStore",
    "S3Store",
    "Snapshot",
    "commit",
    "open_store",
]


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


class S3Store:
    """A flag file in S3, changed with a conditional put on the ETag it was read with."""

    def __init__(
        self, uri: str, *, client: S3Client | None = None, audit_log: str | None = None
    ) -> None:
        self.source = uri
        self.bucket, self.key = _aws.parse_s3_uri(uri)
        self._client = client
        self.audit_path = Path(audit_log) if audit_log else None
        self.audit_location = (
            str(self.audit_path) if self.audit_path else f"s3://{self.bucket}/{self.key}.audit/"
        )

    @property
    def client(self) -> S3Client:
        """The injected boto3 S3 client, else one built on first use."""
        if self._client is None:
            self._client = _aws.s3_client()
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
            if _aws.error_code(err) in _aws.NOT_FOUND:
                return Snapshot(None)
            raise StoreError(f"cannot read {self.source}: {_aws.describe(err)}") from err
        except BotoCoreError as err:
            raise StoreError(f"cannot read {self.source}: {err}") from err

    def write(self, data: bytes, snapshot: Snapshot) -> None:
        """``put_object`` with ``IfMatch`` (or ``IfNoneMatch="*"`` for a new object)."""
        try:
            if snapshot.etag:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=data,
                    ContentType="application/json",
                    IfMatch=snapshot.etag,
                )
            else:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=data,
                    ContentType="application/json",
                    IfNoneMatch="*",
                )
        except ClientError as err:
            if _aws.error_code(err) in _aws.CONFLICT:
                raise ConflictError(
                    f"{self.source} was changed by someone else since it was read "
                    f"(ETag {snapshot.etag or 'none'}); nothing written, run the command again"
                ) from err
            raise StoreError(f"cannot write {self.source}: {_aws.describe(err)}") from err
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
    source: str,
    *,
    s3_client: S3Client | None = None,
    audit_log: str | None = None,
    lock_timeout: float = 10.0,
) -> FlagStore:
    """The store for ``source``: an ``s3://bucket/key`` URI or a filesystem path.

    A malformed ``s3://`` URI raises :class:`~ai_agent_handler.FlagConfigError`.
    """
    if _aws.is_s3_uri(source):
        return S3Store(source, client=s3_client, audit_log=audit_log)
    return LocalFileStore(source, audit_log=audit_log, lock_timeout=lock_timeout)


# -- the write transaction ----------------------------------------------------------------

#: A pure edit of a flag document (:mod:`.edits`): returns a new document.
Edit = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Change:
    """What :func:`commit` did to a flag file."""

    source: str
    phase: str | None
    command: str
    #: False when the edit left the document as it was: nothing was written or audited.
    changed: bool
    #: The rollout before (None when the file was missing or unreadable) and after.
    before: RolloutState | None
    after: RolloutState
    version_before: int | None
    version_after: int | None
    #: Where the audit record went; None when nothing was written.
    audit: str | None
    #: Subcommands that bring back the rollout a rollback cleared (empty otherwise).
    restore: tuple[str, ...] = ()
    #: What the operator should know beyond the change itself (a repaired or created file).
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The change for ``--json`` output."""
        return {
            "source": self.source,
            "phase": self.phase,
            "command": self.command,
            "changed": self.changed,
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json(),
            "version_before": self.version_before,
            "version_after": self.version_after,
            "audit": self.audit,
            "notes": list(self.notes),
        }


def commit(
    store: FlagStore,
    edit: Edit,
    *,
    command: str,
    actor: str,
    reason: str | None = None,
    phase: str | None = None,
    repair: bool = False,
    create: bool = False,
) -> Change:
    """Apply ``edit`` to the flag file of ``store`` as one locked, validated, audited write.

    Under the store's lock: read; parse (an invalid file is refused, or with ``repair``
    rebuilt as legacy everywhere by :func:`.edits.rebuild_legacy`; a missing file is an
    error unless ``create``); edit; when the document changed, bump ``metadata.version``,
    validate exactly the bytes to be written, write them atomically (a conditional put on
    S3) and append one audit record naming ``actor``, ``command`` and ``reason``.

    Raises :class:`~ai_agent_handler.StoreError` (missing file, I/O or AWS error; also when
    the change is written but its audit record failed, which the message says),
    :class:`~ai_agent_handler.ConflictError` (someone else changed the file; nothing
    written), :class:`~ai_agent_handler.FlagFileError` (an invalid file or result; nothing
    written) and :class:`~ai_agent_handler.FlagEditError` (the edit cannot apply).
    """
    source = store.source
    notes: list[str] = []
    with store.locked():
        snapshot = store.read()
        if snapshot.data is None and not create:
            hint = (
                " (check the path; `rollback --create` writes a new legacy file)" if repair else ""
            )
            raise StoreError(f"{source}: no such file{hint if repair else ''}")
        before_doc: dict[str, Any] | None = None
        if snapshot.data is not None:
            try:
                before_doc = parse(snapshot.data, source=source)
            except FlagFileError as err:
                if not repair:
                    raise FlagFileError(
                        f"{err} (fix the file, or run `rollback` to write a clean legacy flag)",
                        err.problems,
                    ) from err
                notes.append(f"the file was invalid ({err}); wrote a clean legacy flag file")
        if before_doc is not None:
            try:
                new_doc = edit(before_doc)
            except FlagEditError as err:
                raise FlagEditError(f"{source}: {err}") from err
        else:
            # A missing or broken file: only a rollback (legacy everywhere) gets here.
            if snapshot.data is None:
                notes.append("the file did not exist; created it with a legacy flag")
            raw = edits.loose_document(snapshot.data)
            new_doc = edits.rebuild_legacy(raw, phase=phase or edits.phase_of(raw, source))
        phase = phase or edits.phase_of(before_doc or new_doc, source)
        before = edits.read_state(before_doc) if before_doc is not None else None
        after = edits.read_state(new_doc)
        version_before = edits.version_of(before_doc) if before_doc is not None else None
        changed = before_doc is None or new_doc != before_doc
        if not changed:
            return Change(
                source,
                phase,
                command,
                False,
                before,
                after,
                version_before,
                version_before,
                audit=None,
            )
        new_doc = edits.bump_version(new_doc)
        problems = validate(new_doc)
        if problems:
            raise FlagFileError(f"refusing to write an invalid file: {problems[0]}", problems)
        data = serialize(new_doc)
        parse(data, source=source)  # what is written is exactly what was validated
        store.write(data, snapshot)
        version_after = edits.version_of(new_doc)
        record: dict[str, Any] = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
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
        if snapshot.etag:
            record["etag_before"] = snapshot.etag
        try:
            store.append_audit(record)
        except StoreError as err:
            raise StoreError(
                f"the change IS written (version {version_after}) but the audit record "
                f"failed: {err}"
            ) from err
    restore = edits.restore_commands(before) if repair and before else []
    return Change(
        source,
        phase,
        command,
        True,
        before,
        after,
        version_before,
        version_after,
        audit=store.audit_location,
        restore=tuple(restore),
        notes=tuple(notes),
    )
