"""Where flag files come from: a local path or an S3 object. I/O only, no decisions.

A source answers one question, :meth:`FlagSource.fetch`: the file's bytes when they may
have changed since the last fetch, or ``None`` when they certainly did not. Faults raise a
:class:`FlagSourceError` subclass. How often to ask (:attr:`FlagSource.min_interval`), how
long an answer may take (:attr:`FlagSource.timeout`) and what to do with the bytes is the
provider's business. A source may also offer ``changed()``, a check cheap enough for a
run's thread: ``False`` when :meth:`~FlagSource.fetch` would certainly return ``None``.

* :class:`LocalFileSource` notices *any* change, not only a newer mtime: it compares
  ``(st_mtime_ns, st_size, st_ino, st_ctime_ns)`` -- an atomic rename changes the inode, a
  ``cp -p`` or ``os.utime`` that moves the mtime backwards still changes the ctime -- and,
  every ``rehash_interval`` seconds, re-reads the file and compares a content hash in case
  a filesystem with coarse timestamps hides a same-size rewrite. Only a regular file is
  read: a FIFO or a device put in the file's place is a fault, never a blocking open.
* :class:`S3Source` makes a conditional ``GetObject`` with ``IfNoneMatch=<last ETag>``: an
  unchanged object costs one request with no body (S3 answers 304). The whole fetch,
  body included, ends by its ``timeout``: a server that drips the body is cut off.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from .. import _aws
from ..exceptions import FlagSourceError, SourceAccessDenied, SourceNotFound, SourceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Default seconds between two freshness checks of a local file: every evaluation makes
#: one ``stat`` (about 2 us), so the first run that starts after a write sees it.
LOCAL_MIN_INTERVAL = 0.0
#: Default seconds between two conditional GETs of an S3 object.
S3_MIN_INTERVAL = 5.0
#: Default seconds one fetch may take before it counts as a fault.
LOCAL_TIMEOUT = 2.0
S3_TIMEOUT = 5.0
#: Default seconds the run that starts a check waits for its answer before deciding on the
#: flags it has. A local read and parse takes well under a millisecond. An S3 GET of a
#: small object takes tens of milliseconds in-region at the median (AWS, "Optimizing
#: Amazon S3 performance", timeouts and retries for latency-sensitive applications), more
#: on a connection reopened after the environment was frozen: 250 ms covers that, so the
#: first run after a change uses it, and bounds what a slow GET adds to one run.
LOCAL_REFRESH_WAIT = 0.005
S3_REFRESH_WAIT = 0.25
_READ_SIZE = 1 << 16


class FlagSource(Protocol):
    """A place a flag file is read from.

    A source may also name ``refresh_wait``: the seconds the run that starts a check waits
    for it (the library's sources do; without one the provider waits 5 ms).
    """

    #: Human-readable location, used in log lines and error messages.
    name: str
    #: Seconds between two freshness checks the provider should respect.
    min_interval: float
    #: Seconds one fetch may take; a fetch still running after that is a fault.
    timeout: float

    def fetch(self) -> bytes | None:
        """The content when it may have changed since the last call, else ``None``.

        The first call, and the first call after a fault, always return the content.
        Raises :class:`FlagSourceError`.
        """
        ...


class LocalFileSource:
    """A flag file on a local filesystem (a checkout, EFS, ``/tmp`` fed by AppConfig)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        min_interval: float = LOCAL_MIN_INTERVAL,
        rehash_interval: float = 1.0,
        timeout: float = LOCAL_TIMEOUT,
    ) -> None:
        self.path = os.fspath(path)
        self.name = self.path
        self.min_interval = min_interval
        self.refresh_wait = LOCAL_REFRESH_WAIT
        self.rehash_interval = rehash_interval
        self.timeout = timeout
        self._signature: tuple[int, int, int, int] | None = None
        self._digest: bytes | None = None
        self._rehash_at = 0.0

    def changed(self) -> bool:
        """False when :meth:`fetch` would return None: one ``stat``, no open, no read.

        Raises :class:`FlagSourceError` when the path is missing, unreadable or not a
        regular file.
        """
        try:
            st = os.stat(self.path)
        except OSError as err:
            self._signature = self._digest = None
            raise _local_error(self.path, err) from err
        if (
            st.st_mtime_ns,
            st.st_size,
            st.st_ino,
            st.st_ctime_ns,
        ) == self._signature and time.monotonic() < self._rehash_at:
            return False  # the file read last (a regular one): same inode, same ctime
        if not stat.S_ISREG(st.st_mode):
            self._signature = self._digest = None
            raise _not_regular(self.path, st.st_mode)
        return True

    def fetch(self) -> bytes | None:
        """See :meth:`FlagSource.fetch`."""
        try:
            st = os.stat(self.path)
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(self.path, st.st_mode)
            now = time.monotonic()
            if signature(st) == self._signature and now < self._rehash_at:
                return None
            data, st = _read_regular(self.path)
        except OSError as err:
            # After a fault the next successful read must be reported, even if the file
            # comes back byte for byte: the provider needs it to leave its fault state.
            self._signature = self._digest = None
            raise _local_error(self.path, err) from err
        except FlagSourceError:
            self._signature = self._digest = None
            raise
        digest = hashlib.sha256(data).digest()
        unchanged = digest == self._digest
        self._signature, self._digest = signature(st), digest
        self._rehash_at = now + self.rehash_interval
        return None if unchanged else data


def signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """What identifies a version of a local file: mtime, size, inode and ctime.

    The inode changes with an atomic rename, the ctime with any write or ``utime``, even
    one that moves the mtime backwards (a ``cp -p`` rollback).
    """
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _read_regular(path: str) -> tuple[bytes, os.stat_result]:
    # O_NONBLOCK: a FIFO swapped in after the stat above must not block the open; the
    # fstat of the opened file is what the signature describes.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(), st
    finally:
        os.close(fd)


def _not_regular(path: str, mode: int) -> FlagSourceError:
    if stat.S_ISDIR(mode):
        return FlagSourceError(f"{path}: is a directory")
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "not a regular file"
    )
    return FlagSourceError(f"{path}: {kind}, not a regular file; not read")


def _local_error(path: str, err: OSError) -> FlagSourceError:
    reason = err.strerror or type(err).__name__
    if isinstance(err, FileNotFoundError):
        return SourceNotFound(f"{path}: no such file")
    if isinstance(err, PermissionError):
        return SourceAccessDenied(f"{path}: permission denied")
    if isinstance(err, IsADirectoryError):
        return FlagSourceError(f"{path}: is a directory")
    return FlagSourceError(f"{path}: {reason}")


# -- S3 ----------------------------------------------------------------------------------


class S3Source:
    """A flag file kept as an S3 object, ``s3://bucket/key``.

    ``client`` is a boto3 S3 client (built on first use with short timeouts,
    :data:`~ai_agent_handler._aws.FLAG_READ_CONFIG`, when omitted: the check runs on the
    evaluation path). ``expected_bucket_owner`` is sent as ``ExpectedBucketOwner`` so a
    bucket re-created by another account is refused. A malformed URI raises
    :class:`~ai_agent_handler.FlagConfigError`.
    """

    def __init__(
        self,
        uri: str,
        *,
        client: S3Client | None = None,
        min_interval: float = S3_MIN_INTERVAL,
        expected_bucket_owner: str | None = None,
        timeout: float = S3_TIMEOUT,
    ) -> None:
        self.bucket, self.key = _aws.parse_s3_uri(uri)
        self.name = f"s3://{self.bucket}/{self.key}"
        self.min_interval = min_interval
        self.refresh_wait = S3_REFRESH_WAIT
        self.timeout = timeout
        self.expected_bucket_owner = expected_bucket_owner
        self._client = client
        self._etag: str | None = None

    @property
    def client(self) -> S3Client:
        """The boto3 S3 client: the injected one, else one built on first use."""
        if self._client is None:
            self._client = _aws.s3_client(config=_aws.FLAG_READ_CONFIG)
        return self._client

    def fetch(self) -> bytes | None:
        """See :meth:`FlagSource.fetch`."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self._etag is not None:
            params["IfNoneMatch"] = self._etag
        if self.expected_bucket_owner:
            params["ExpectedBucketOwner"] = self.expected_bucket_owner
        deadline = time.monotonic() + self.timeout
        try:
            response = self.client.get_object(**params)
            data = _read_body(response["Body"], deadline, self.name, self.timeout)
        except ClientError as err:
            code = _aws.error_code(err)
            if code in _aws.NOT_MODIFIED:
                return None
            self._etag = None
            raise self._client_error(code, err) from err
        except BotoCoreError as err:  # timeouts, connection errors, a truncated body
            self._etag = None
            raise SourceUnavailable(f"{self.name}: {err}") from err
        self._etag = response.get("ETag")
        return data

    def _client_error(self, code: str, err: Exception) -> FlagSourceError:
        message = f"{self.name}: {code or 'error'} ({err})"
        if code in _aws.NOT_FOUND:
            return SourceNotFound(message)
        if code in _aws.DENIED:
            return SourceAccessDenied(message)
        # Throttling (SlowDown, Throttling, RequestLimitExceeded), timeouts (RequestTimeout)
        # and 5xx are worth retrying at the next interval; so is anything else unexpected.
        return SourceUnavailable(message)


def _read_body(body: Any, deadline: float, name: str, timeout: float) -> bytes:
    """The whole body, or :class:`SourceUnavailable` once ``deadline`` passes.

    A read timeout bounds each socket read, not the body: a server that sends a byte a
    second never trips it. Reading what has arrived (``read1``) and checking the clock in
    between bounds the whole fetch.
    """
    raw = getattr(body, "_raw_stream", None)
    read1 = _read1(raw)
    if read1 is None:  # a stream that is not an HTTP response (a test double): one read
        data: bytes = body.read()
        return data
    late = f"{name}: body not received within {timeout:g} s"
    expected = getattr(body, "_content_length", None)
    parts: list[bytes] = []
    size = 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SourceUnavailable(late)
            _set_socket_timeout(raw, min(left, _aws.FLAG_READ_TIMEOUT))
            part = read1(_READ_SIZE)
            if not part:
                break
            parts.append(part)
            size += len(part)
    except SourceUnavailable:
        body.close()
        raise
    # A socket timeout or reset while reading; http.client's IncompleteRead when urllib3
    # 1.26's http.client response is read directly.
    except (OSError, HTTPError, http.client.HTTPException) as err:
        body.close()
        if time.monotonic() >= deadline:
            raise SourceUnavailable(late) from None
        raise SourceUnavailable(f"{name}: body read failed: {err}") from err
    if expected is not None and size != int(expected):
        body.close()
        raise SourceUnavailable(f"{name}: body truncated ({size} of {expected} bytes)")
    # The whole body is read: the connection goes back to the pool (urllib3 2 did so in
    # read1; urllib3 1.26, whose http.client response was read directly, has to be told).
    release = getattr(raw, "release_conn", None)
    if release is not None:
        release()
    return b"".join(parts)


def _read1(raw: Any) -> Callable[[int], bytes] | None:
    """What returns the bytes that have arrived (at most n) without waiting for more.

    urllib3 2's response has ``read1``. urllib3 1.26's has not (botocore allows 1.26) and
    its ``read(n)`` waits for n bytes, each socket read within the read timeout: a dripping
    server would hold it for minutes. The http.client response under it (``_fp``) has
    ``read1``; botocore asks urllib3 for undecoded content, so its bytes are the same.
    ``None`` for a stream that is neither (a test double).
    """
    read1: Callable[[int], bytes] | None = getattr(raw, "read1", None)
    if read1 is None:
        read1 = getattr(getattr(raw, "_fp", None), "read1", None)
    return read1


def _set_socket_timeout(raw: Any, seconds: float) -> None:
    # The socket under urllib3's response (what botocore's set_socket_timeout reaches for);
    # a stream without one (a test double) keeps the client's read timeout.
    sock = getattr(
        getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None
    )
    if sock is not None:
        sock.settimeout(seconds)


def open_source(
    source: str | os.PathLike[str] | FlagSource,
    *,
    s3_client: S3Client | None = None,
    min_interval: float | None = None,
    expected_bucket_owner: str | None = None,
) -> FlagSource:
    """A :class:`FlagSource` for a path, an ``s3://`` URI, or an existing source object."""
    if not isinstance(source, (str, os.PathLike)):
        if min_interval is not None:
            source.min_interval = min_interval
        return source
    location = os.fspath(source)
    if _aws.is_s3_uri(location):
        return S3Source(
            location,
            client=s3_client,
            min_interval=S3_MIN_INTERVAL if min_interval is None else min_interval,
            expected_bucket_owner=expected_bucket_owner,
        )
    return LocalFileSource(
        location, min_interval=LOCAL_MIN_INTERVAL if min_interval is None else min_interval
    )
