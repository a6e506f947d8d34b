"""An operator's change to a flag file, as one transaction: :func:`commit`.

``commit(store, edit, ...)`` holds the store's lock, reads the file, applies a pure edit
(:mod:`.edits`), bumps ``metadata.version``, validates what will be written, opens the audit
log, writes the file atomically and appends one audit record, and returns a :class:`Change`
saying what happened. An edit that changes nothing writes nothing. The stores are where the
file is: a local path or an S3 object. The guarantees an operator relies on, per kind of store:

* **Local file.** The file is the *resolved* path (symlinks followed when the store is made):
  a symlink and its target are one file, with one lock and one audit log. Every change happens
  under an exclusive ``fcntl.flock`` on ``<resolved file>.lock``, held from the read to the
  audit record, so two operators never lose each other's change. The new bytes go to this
  writer's own temporary file in the target's directory (named with host, pid and a random
  part), are fsynced, renamed over the target with ``os.replace`` (atomic on POSIX) and the
  directory is fsynced: a reader -- and a crash -- sees the old file or the new one, never a
  mix, and a symlinked flag file keeps its link. A temporary file left by a writer that died
  is removed by the next one (this host's when its pid is gone; any host's after an hour).
  The audit record is one JSON line appended (and fsynced) to ``<resolved file>.audit.jsonl``.
* **A shared flag folder.** The lock and audit files are never opened through a symlink
  (``O_NOFOLLOW``: a symlink there refuses the change), and a file that is not a valid flag
  file (or a missing one) is never rewritten through a symlink: a repair names the target to
  run on instead. The lock and audit files are created with the flag file's permission bits
  and group (and, when root creates them, its owner), whatever the umask; the replaced flag
  file keeps its mode and group too. Whoever may change the flag file may lock and audit it.
* **S3 object.** S3 has no locks; the object is read with its ETag and written with
  ``put_object(IfMatch=<etag>)`` (``IfNoneMatch="*"`` when it did not exist), so a change
  made by someone else in between is refused with :class:`ConflictError`, never overwritten.
  Audit records are separate objects ``<key>.audit/<version>-<time>-<id>.json`` next to it
  (S3 cannot append, and one object per record cannot conflict).

``audit_log=PATH`` sends the records of either store to a local JSON-lines file instead.

**A change is audited or not made.** The audit log is opened before the file is written, so a
log that cannot be opened (permissions, a symlink, a folder) refuses the change with nothing
written. When the record cannot be appended after the write (a full disk, a refused put), the
write is undone -- the previous bytes put back atomically, a created file removed; on S3 under
``IfMatch`` on the ETag just written -- and the error says the change was NOT made. Only when
the undo fails too does the error say the change is written without its record. Every audit
record is one line for every reader: the characters ``str.splitlines()`` breaks at are
escaped (``\u2028``), the rest stays readable UTF-8.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import glob
import json
import math
import os
import re
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .. import _aws
from ..exceptions import ConflictError, FlagEditError, FlagFileError, StoreError
from ..flag_file.document import parse, serialize, validate
from . import edits
from .edits import RolloutState

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "AuditLog",
    "Change",
    "Edit",
    "FlagStore",
    "LocalFileStore",
    "S3Store",
    "Snapshot",
    "commit",
    "open_store",
]

#: A temporary flag file older than this belongs to a dead writer, whichever host wrote it
#: (a write takes milliseconds).
STALE_TEMP_AGE = 3600.0


@dataclass(frozen=True)
class Snapshot:
    """The bytes read or written (None: no file) and what a later write must match."""

    data: bytes | None
    etag: str | None = None


class AuditLog(Protocol):
    """Where the audit records of a store go, opened for one change before it is written."""

    def append(self, record: Mapping[str, Any]) -> None:
        """Keep the record of a change just written; :class:`StoreError` when it cannot."""
        ...


class FlagStore(Protocol):
    """A flag file that can be read, changed atomically, audited and put back."""

    source: str
    audit_location: str

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold off other writers (through the audit record)."""
        ...

    def read(self) -> Snapshot:
        """The current bytes."""
        ...

    def check_rewrite(self, snapshot: Snapshot) -> None:
        """Raise :class:`StoreError` when a file that is missing or not a valid flag file
        (``snapshot``) must not be written here."""
        ...

    def open_audit(self) -> contextlib.AbstractContextManager[AuditLog]:
        """The audit log, opened before the write: :class:`StoreError` refuses the change."""
        ...

    def write(self, data: bytes, snapshot: Snapshot) -> Snapshot:
        """Replace the file with ``data`` if it is still what ``snapshot`` saw; what was written."""
        ...

    def undo(self, written: Snapshot, previous: Snapshot) -> None:
        """Put ``previous`` back (remove the file when it had none) over ``written``."""
        ...


#: The characters str.splitlines() breaks a line at, as JSON escapes. json.dumps escapes the
#: ASCII ones itself; U+0085, U+2028 and U+2029 it leaves raw (with ensure_ascii=False).
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def _audit_line(record: Mapping[str, Any]) -> bytes:
    # Those characters can only occur inside JSON strings, where the escape means the same.
    # A lone surrogate (an undecodable byte of a command line) becomes its JSON escape too.
    text = json.dumps(record, sort_keys=True, ensure_ascii=False).translate(_LINE_BREAKS)
    return (text + "\n").encode("utf-8", "backslashreplace")


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _adopt(fd: int, like: os.stat_result | None, mode: int) -> None:
    """Give a file this writer just created ``mode`` (whatever the umask) and the group of
    ``like`` (the flag file), and its owner when we are root; the ownership is best effort."""
    if like is not None:
        owner = like.st_uid if os.geteuid() == 0 else -1
        with contextlib.suppress(OSError):  # not a member of that group, or no chown here
            os.fchown(fd, owner, like.st_gid)
    os.fchmod(fd, mode)


def _open_beside(path: Path, flags: int, like: os.stat_result | None, what: str) -> int:
    """Open the lock or audit file ``path`` of a flag file, never through a symlink.

    A file created here takes the permission bits (read/write only), group and, for root,
    owner of ``like``, the flag file, so every operator of the flag file can open it too.
    """
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    mode = stat.S_IMODE(like.st_mode) & 0o666 if like is not None else 0o644
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:  # the usual case; a symlink there fails below
            return os.open(path, flags | os.O_CREAT, mode)
        try:
            if like is not None:
                _adopt(fd, like, mode)
        except OSError:
            os.close(fd)
            raise
        return fd
    except OSError as err:
        if os.path.islink(path):
            raise StoreError(
                f"refusing to follow a symlink at {path} ({what}); nothing written"
            ) from err
        raise StoreError(
            f"cannot open {what} {path}: {err.strerror or err}; nothing written"
        ) from err


class _AuditFile:
    """A local JSON-lines audit log, open for appending."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def append(self, record: Mapping[str, Any]) -> None:
        """One line, appended whole (O_APPEND, and flock against other flag files sharing
        the log) and fsynced; a line that fails half-way is cut off again."""
        line = _audit_line(record)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                end = os.fstat(self.fd).st_size
                try:
                    view = memoryview(line)
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


@contextlib.contextmanager
def _open_audit_file(path: Path, like: os.stat_result | None) -> Iterator[AuditLog]:
    fd = _open_beside(path, os.O_WRONLY | os.O_APPEND, like, "the audit log")
    try:
        yield _AuditFile(path, fd)
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


def _host() -> str:
    """This host's name as it appears in temporary file names (no dots)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (when unsure: yes)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


class LocalFileStore:
    """A flag file on a local filesystem (or EFS), changed under ``flock`` and atomically.

    ``path`` is resolved (symlinks followed) when the store is made: the lock, the default
    audit log and the file replaced are those of the target. :attr:`source` stays the path
    as given (messages and the audit record name it).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, audit_log: str | None = None, lock_timeout: float
    ) -> None:
        if not (math.isfinite(lock_timeout) and lock_timeout >= 0):
            raise ValueError(f"lock_timeout must be finite seconds >= 0, got {lock_timeout!r}")
        self.path = Path(path)
        self.source = str(self.path)
        self.target = Path(os.path.realpath(self.path))
        self.lock_path = _beside(self.target, ".lock")
        self.audit_path = Path(audit_log) if audit_log else _beside(self.target, ".audit.jsonl")
        self.audit_location = str(self.audit_path)
        self.lock_timeout = lock_timeout

    def _stat(self) -> os.stat_result | None:
        try:
            return os.stat(self.target)
        except OSError:
            return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive ``flock`` on ``<file>.lock``; :class:`ConflictError` after the timeout."""
        fd = _open_beside(self.lock_path, os.O_RDWR, self._stat(), "the lock file")
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
            return Snapshot(self.target.read_bytes())
        except FileNotFoundError:
            return Snapshot(None)
        except OSError as err:
            raise StoreError(f"cannot read {self.source}: {err.strerror}") from err

    def check_rewrite(self, snapshot: Snapshot) -> None:
        """Refuse to repair or create a flag file through a symlink: the link may point at
        anything (another program's configuration), and only a valid flag file proves it
        is the flag file."""
        if not self.path.is_symlink():
            return
        what = "does not exist" if snapshot.data is None else "is not a valid flag file"
        raise StoreError(
            f"{self.path} is a symlink to {self.target}, which {what}; refusing to write "
            f"through the link (if {self.target} is the flag file, run the command with "
            f"--file {self.target}); nothing written"
        )

    def open_audit(self) -> contextlib.AbstractContextManager[AuditLog]:
        """The audit log, opened (created like the flag file) for appending."""
        return _open_audit_file(self.audit_path, self._stat())

    def write(self, data: bytes, snapshot: Snapshot) -> Snapshot:
        """Temp file in the target's directory, fsync, ``os.replace``, fsync the directory.

        A symlinked flag file (a ConfigMap, a deploy tool's link) keeps its link: the
        target is replaced, next to the target, keeping its mode and group.
        """
        self._replace(data)
        return Snapshot(data)

    def undo(self, written: Snapshot, previous: Snapshot) -> None:
        """The previous bytes back, atomically as any write; a file just created removed."""
        if previous.data is not None:
            self._replace(previous.data)
            return
        try:
            self.target.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            raise StoreError(f"cannot remove {self.source}: {err.strerror}") from err
        _fsync_dir(self.target.parent)

    def _replace(self, data: bytes) -> None:
        target = self.target
        directory = target.parent
        self._remove_stale_temp_files()
        like = self._stat()
        mode = stat.S_IMODE(like.st_mode) if like is not None else 0o644
        prefix = f".{target.name}.{_host()}.{os.getpid()}."
        try:
            fd, temp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
        except OSError as err:
            raise StoreError(f"cannot write next to {self.source}: {err.strerror}") from err
        try:
            with os.fdopen(fd, "wb") as out:
                _adopt(out.fileno(), like, mode)  # mkstemp creates 0600 and the writer's group
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(err, OSError):
                raise StoreError(f"cannot write {self.source}: {err.strerror or err}") from err
            raise
        _fsync_dir(directory)

    def _remove_stale_temp_files(self) -> None:
        # Called under the lock, so no writer of this file is between write and rename: a
        # temp file is a dead writer's (its change never happened). Still, only one that is
        # surely dead goes: this host's whose pid is gone, or anyone's after an hour (other
        # hosts' pids mean nothing here; names of another format are judged by age alone).
        prefix = f".{self.target.name}."
        host, now = _host(), time.time()
        for leftover in self.target.parent.glob(glob.escape(prefix) + "*.tmp"):
            owner = leftover.name[len(prefix) : -len(".tmp")].split(".")
            dead = (
                len(owner) == 3
                and owner[0] == host
                and owner[1].isascii()
                and owner[1].isdigit()
                and not _alive(int(owner[1]))
            )
            with contextlib.suppress(OSError):
                if dead or now - leftover.lstat().st_mtime > STALE_TEMP_AGE:
                    leftover.unlink()


class _S3AuditObjects:
    """Audit records as objects ``<key>.audit/<version>-<time>-<id>.json``."""

    def __init__(self, store: S3Store) -> None:
        self.store = store

    def append(self, record: Mapping[str, Any]) -> None:
        store = self.store
        version = record.get("version_after")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{store.key}.audit/{version!s:>010}-{stamp}-{uuid.uuid4().hex[:8]}.json"
        try:
            store.client.put_object(
                Bucket=store.bucket,
                Key=name,
                Body=_audit_line(record),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except (ClientError, BotoCoreError) as err:
            raise StoreError(
                f"cannot write the audit record s3://{store.bucket}/{name}: {_describe(err)}"
            ) from err


def _describe(err: ClientError | BotoCoreError) -> str:
    return _aws.describe(err) if isinstance(err, ClientError) else str(err)


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

    def check_rewrite(self, snapshot: Snapshot) -> None:
        """Nothing to refuse: an object key has no links."""

    def open_audit(self) -> contextlib.AbstractContextManager[AuditLog]:
        """Objects under ``<key>.audit/`` (nothing to open), or the local ``audit_log``."""
        if self.audit_path is not None:
            return _open_audit_file(self.audit_path, None)
        return contextlib.nullcontext(_S3AuditObjects(self))

    def write(self, data: bytes, snapshot: Snapshot) -> Snapshot:
        """``put_object`` with ``IfMatch`` (or ``IfNoneMatch="*"`` for a new object)."""
        try:
            if snapshot.etag:
                response = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=data,
                    ContentType="application/json",
                    IfMatch=snapshot.etag,
                )
            else:
                response = self.client.put_object(
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
        return Snapshot(data, response.get("ETag"))

    def undo(self, written: Snapshot, previous: Snapshot) -> None:
        """The previous bytes put back (a created object deleted), only over what we wrote
        (``IfMatch`` on its ETag)."""
        etag = written.etag or "*"
        try:
            if previous.data is None:
                self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
            else:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=previous.data,
                    ContentType="application/json",
                    IfMatch=etag,
                )
        except (ClientError, BotoCoreError) as err:
            raise StoreError(f"cannot put {self.source} back: {_describe(err)}") from err


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
    S3) and append one audit record naming ``actor``, ``command`` and ``reason`` (the audit
    log is opened before the write; a failed append undoes the write).

    Raises :class:`~ai_agent_handler.StoreError` (missing file, I/O or AWS error, a symlink
    where none may be, an audit log that cannot be kept: the change is then not made, or --
    when undoing it failed too -- written without its record, which the message says),
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
            store.check_rewrite(snapshot)
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
        with store.open_audit() as audit:  # a change that cannot be audited stops here
            written = store.write(data, snapshot)
            try:
                audit.append(record)
            except StoreError as err:
                _undo(store, written, snapshot, err, version_after)
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


def _undo(
    store: FlagStore, written: Snapshot, previous: Snapshot, failure: StoreError, version: Any
) -> NoReturn:
    """Put ``previous`` back after an audit record failed; raise what happened."""
    try:
        store.undo(written, previous)
    except StoreError as err:
        raise StoreError(
            f"the change IS written (version {version}) but NOT audited: {failure}; "
            f"putting the previous file back failed too: {err}"
        ) from failure
    raise StoreError(
        f"the change was NOT made: {failure}; {store.source} is back as it was"
    ) from failure
