"""Where a flag file lives: read it, lock it, write it atomically, put it back, audit it.

A store offers what :func:`.edits_io.commit` needs for one change: ``check_place`` (the
file could be written where it is), ``locked`` (hold off other writers), ``read`` (a
:class:`Snapshot`), ``check_rewrite`` (a missing or broken file may be written here),
``highest_audited_version``, ``open_audit`` (the log, opened before the write),
``write`` (only over what was read) and ``undo``.

* :class:`LocalFileStore`: the *resolved* path (a symlink and its target are one file, with
  one lock and one audit log); every change under ``flock`` on ``<file>.lock``, from the
  read to the audit record, so two operators never lose each other's change; written with
  a temp file, fsync and ``os.replace``. Lock and audit files are never opened through a
  symlink and take the flag file's permission bits and group: whoever may change the flag
  file may lock and audit it. A file that is missing or invalid is never rewritten through
  a symlink.
* :class:`S3Store`: no lock; ``put_object`` with ``IfMatch`` on the ETag read
  (``IfNoneMatch="*"`` for a new object), so someone else's change in between is refused
  with :class:`ConflictError`, never overwritten.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import glob
import math
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _aws
from ..exceptions import ConflictError, StoreError
from . import audit, times

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: A temporary flag file older than this belongs to a dead writer, whichever host wrote it
#: (a write takes milliseconds).
STALE_TEMP_AGE = 3600.0


@dataclass(frozen=True)
class Snapshot:
    """The bytes read or written (None: no file) and what a later write must match."""

    data: bytes | None
    etag: str | None = None
    #: When the store last wrote the file, on the store's clock (the file's mtime, the
    #: object's ``LastModified``); None when not known.
    modified: datetime.datetime | None = None
    #: The store's clock at the read (S3's ``Date`` header); None when the store has no
    #: clock of its own to tell (a local file: this host's clock).
    server_time: datetime.datetime | None = field(default=None, compare=False)


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


@contextlib.contextmanager
def _open_log(path: Path, like: os.stat_result | None) -> Iterator[audit.LocalLog]:
    """The local audit log ``path``, opened for appending (never through a symlink)."""
    fd = _open_beside(path, os.O_WRONLY | os.O_APPEND, like, "the audit log")
    try:
        yield audit.LocalLog(path, fd)
    finally:
        os.close(fd)


def highest(*versions: int | None) -> int | None:
    return max((v for v in versions if v is not None), default=None)


def _highest_in_log(path: Path, belongs: Callable[[object], bool] | None) -> int | None:
    """The highest version the local log ``path`` records (of the file ``belongs`` accepts);
    an unreadable log refuses the change: without it the next version could repeat one."""
    try:
        return audit.highest_version(audit.read_log(path, belongs))
    except OSError as err:
        raise StoreError(
            f"cannot read the audit log {path} to pick the next version: "
            f"{err.strerror or err}; nothing written"
        ) from err


#: errno values of a filesystem that cannot hard-link (some network and FUSE filesystems).
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}
)


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
        self.default_audit_path = _beside(self.target, ".audit.jsonl")
        self.audit_path = Path(audit_log) if audit_log else self.default_audit_path
        self.audit_location = str(self.audit_path)
        self.lock_timeout = lock_timeout

    #: :meth:`locked` creates a file: refusals and changes that change nothing are answered
    #: before the lock is taken, so they leave no trace.
    has_lock_file = True

    def check_place(self) -> None:
        """The flag file's folder (and the audit log's) must exist: a mistyped folder is
        named as such, and nothing (no lock file) is created for it."""
        folder = self.target.parent
        if not folder.is_dir():
            shown = folder if self.path.is_symlink() else self.path.parent
            raise StoreError(
                f"folder {shown} does not exist (check the path {self.source}); nothing written"
            )
        if not self.audit_path.parent.is_dir():
            raise StoreError(
                f"folder {self.audit_path.parent} of the audit log does not exist; nothing written"
            )

    def highest_audited_version(self) -> int | None:
        """From the JSON-lines log beside the file and, with ``audit_log``, that log's
        records of this file (a shared log holds other files' records too)."""
        found = _highest_in_log(self.default_audit_path, None)
        if self.audit_path != self.default_audit_path:
            found = highest(found, _highest_in_log(self.audit_path, audit.names(self.source)))
        return found

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
                            f"{self.source} is being changed: another operator holds the "
                            f"lock {self.lock_path}; waited {self.lock_timeout:g} s; "
                            "nothing written, try again",
                            options={"lock_timeout": "SECONDS"},
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def read(self) -> Snapshot:
        """The file's bytes and mtime; ``Snapshot(None)`` when it does not exist."""
        try:
            with open(self.target, "rb") as file:
                mtime = os.fstat(file.fileno()).st_mtime
                data = file.read()
        except FileNotFoundError:
            return Snapshot(None)
        except OSError as err:
            raise StoreError(f"cannot read {self.source}: {err.strerror}") from err
        return Snapshot(data, modified=times.from_timestamp(mtime))

    def check_rewrite(self, snapshot: Snapshot) -> None:
        """Refuse to repair or create a flag file through a symlink: the link may point at
        anything (another program's configuration), and only a valid flag file proves it
        is the flag file."""
        if not self.path.is_symlink():
            return
        what = "does not exist" if snapshot.data is None else "is not a valid flag file"
        raise StoreError(
            f"{self.path} is a symlink to {self.target}, which {what}; refusing to write "
            f"through the link (if {self.target} is the flag file, name it instead); "
            "nothing written",
            options={"source": str(self.target)},
        )

    def open_audit(self) -> contextlib.AbstractContextManager[audit.LocalLog]:
        """The audit log, opened (created like the flag file) for appending."""
        return _open_log(self.audit_path, self._stat())

    def write(self, data: bytes, snapshot: Snapshot) -> Snapshot:
        """Temp file in the target's directory, fsync, ``os.replace``, fsync the directory.

        A symlinked flag file (a ConfigMap, a deploy tool's link) keeps its link: the
        target is replaced, next to the target, keeping its mode and group. A file that did
        not exist (``snapshot.data`` None) is created only if it still does not: the
        complete temp file is hard-linked to the name, which fails when the name exists,
        so of two writers creating it only one succeeds (:class:`ConflictError`).
        """
        self._replace(data, create=snapshot.data is None)
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

    def _replace(self, data: bytes, *, create: bool = False) -> None:
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
            if create:
                self._link_new(temp, data, mode)
            else:
                os.replace(temp, target)
        except BaseException as err:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            if isinstance(err, OSError):
                raise StoreError(f"cannot write {self.source}: {err.strerror or err}") from err
            raise
        if create:
            with contextlib.suppress(OSError):
                os.unlink(temp)  # the name holds the data now
        _fsync_dir(directory)

    def _link_new(self, temp: str, data: bytes, mode: int) -> None:
        """Give the complete ``temp`` file the flag file's name, only if that name is free."""
        try:
            os.link(temp, self.target)
            return
        except FileExistsError:
            raise self._created_meanwhile() from None
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise
        # A filesystem without hard links: claim the name exclusively, then fill it.
        try:
            fd = os.open(self.target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        except FileExistsError:
            raise self._created_meanwhile() from None
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                self.target.unlink()
            raise

    def _created_meanwhile(self) -> ConflictError:
        return ConflictError(
            f"{self.source} was created by someone else since it was read; nothing written, "
            "run the command again"
        )

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


class S3Store:
    """A flag file in S3, changed with a conditional put on the ETag it was read with."""

    def __init__(
        self, uri: str, *, client: S3Client | None = None, audit_log: str | None = None
    ) -> None:
        self.bucket, self.key = _aws.parse_s3_uri(uri)
        self.source = f"s3://{self.bucket}/{self.key}"  # one spelling in messages and records
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

    has_lock_file = False

    def check_place(self) -> None:
        """Nothing to check before the write: a missing bucket fails the put itself."""

    def highest_audited_version(self) -> int | None:
        """From the names of the objects under ``<key>.audit/`` (they start with the
        version written), and with ``audit_log`` that local log's records of this file.

        Listing needs ``s3:ListBucket`` on the bucket: denied, the change is refused.
        """
        try:
            found = audit.highest_version(audit.s3_entries(self.client, self.bucket, self.key))
        except _aws.ERRORS as err:
            denied = _aws.error_code(err) in _aws.DENIED
            need = f" (listing needs s3:ListBucket on bucket {self.bucket})" if denied else ""
            raise StoreError(
                f"cannot list the audit records s3://{self.bucket}/{self.key}.audit/ to pick "
                f"the next version{need}: {_aws.describe(err)}; nothing written"
            ) from err
        if self.audit_path is not None:
            found = highest(found, _highest_in_log(self.audit_path, audit.names(self.source)))
        return found

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """No lock: the conditional put in :meth:`write` refuses concurrent changes."""
        return contextlib.nullcontext()

    def read(self) -> Snapshot:
        """The object's bytes, ETag and ``LastModified``, and S3's clock (the ``Date``
        header); ``Snapshot(None)`` when it does not exist."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            data = response["Body"].read()
            date = response["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
            clock = times.http_date(date)
            return Snapshot(data, response["ETag"], response.get("LastModified"), clock)
        except _aws.ERRORS as err:
            code = _aws.error_code(err)
            if code == "NoSuchBucket":  # not a missing file: nothing can be written there
                raise StoreError(
                    f"cannot read {self.source}: no such bucket {self.bucket} (NoSuchBucket)"
                ) from err
            if code in _aws.NOT_FOUND:
                return Snapshot(None)
            raise StoreError(f"cannot read {self.source}: {_aws.describe(err)}") from err

    def check_rewrite(self, snapshot: Snapshot) -> None:
        """Nothing to refuse: an object key has no links."""

    def open_audit(self) -> contextlib.AbstractContextManager[audit.LocalLog | audit.S3Objects]:
        """Objects under ``<key>.audit/`` (nothing to open), or the local ``audit_log``."""
        if self.audit_path is not None:
            return _open_log(self.audit_path, None)
        return contextlib.nullcontext(audit.S3Objects(self.client, self.bucket, self.key))

    def write(self, data: bytes, snapshot: Snapshot) -> Snapshot:
        """``put_object`` with ``IfMatch`` (or ``IfNoneMatch="*"`` for a new object)."""
        condition = {"IfMatch": snapshot.etag} if snapshot.etag else {"IfNoneMatch": "*"}
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self.key,
                Body=data,
                ContentType="application/json",
                **condition,  # type: ignore[arg-type]
            )
        except _aws.ERRORS as err:
            if _aws.error_code(err) in _aws.CONFLICT:
                raise ConflictError(
                    f"{self.source} was changed by someone else since it was read "
                    f"(ETag {snapshot.etag or 'none'}); nothing written, run the command again"
                ) from err
            raise StoreError(f"cannot write {self.source}: {_aws.describe(err)}") from err
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
        except _aws.ERRORS as err:
            raise StoreError(f"cannot put {self.source} back: {_aws.describe(err)}") from err


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


#: A flag file's store: local (or EFS) or S3.
FlagStore = LocalFileStore | S3Store
