"""Where flag files come from: a local path or an S3 object. I/O only, no decisions.

A source answers one question, :meth:`FlagSource.fetch`: the file's bytes when they may
have changed since the last fetch, or ``None`` when they certainly did not. Faults raise a
:class:`FlagSourceError` subclass. How often to ask (:attr:`FlagSource.min_interval`) and
what to do with the bytes is the provider's business.

* :class:`LocalFileSource` notices *any* change, not only a newer mtime: it compares
  ``(st_mtime_ns, st_size, st_ino, st_ctime_ns)`` -- an atomic rename changes the inode, a
  ``cp -p`` or ``os.utime`` that moves the mtime backwards still changes the ctime -- and,
  every ``rehash_interval`` seconds, re-reads the file and compares a content hash in case
  a filesystem with coarse timestamps hides a same-size rewrite.
* :class:`S3Source` makes a conditional ``GetObject`` with ``IfNoneMatch=<last ETag>``: an
  unchanged object costs one request with no body (S3 answers 304).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from .. import _aws
from ..exceptions import FlagSourceError, SourceAccessDenied, SourceNotFound, SourceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "LOCAL_MIN_INTERVAL",
    "S3_MIN_INTERVAL",
    "FlagSource",
    "LocalFileSource",
    "S3Source",
    "open_source",
]

#: Default seconds between two freshness checks of a local file.
LOCAL_MIN_INTERVAL = 0.1
#: Default seconds between two conditional GETs of an S3 object.
S3_MIN_INTERVAL = 5.0


class FlagSource(Protocol):
    """A place a flag file is read from."""

    #: Human-readable location, used in log lines and error messages.
    name: str
    #: Seconds between two freshness checks the provider should respect.
    min_interval: float

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
    ) -> None:
        self.path = os.fspath(path)
        self.name = self.path
        self.min_interval = min_interval
        self.rehash_interval = rehash_interval
        self._signature: tuple[int, int, int, int] | None = None
        self._digest: bytes | None = None
        self._rehash_at = 0.0

    def fetch(self) -> bytes | None:
        """See :meth:`FlagSource.fetch`."""
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
            now = time.monotonic()
            if signature == self._signature and now < self._rehash_at:
                return None
            with open(self.path, "rb") as fh:
                data = fh.read()
        except OSError as err:
            # After a fault the next successful read must be reported, even if the file
            # comes back byte for byte: the provider needs it to leave its fault state.
            self._signature = self._digest = None
            raise _local_error(self.path, err) from err
        digest = hashlib.sha256(data).digest()
        unchanged = digest == self._digest
        self._signature, self._digest = signature, digest
        self._rehash_at = now + self.rehash_interval
        return None if unchanged else data


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
    ) -> None:
        self.bucket, self.key = _aws.parse_s3_uri(uri)
        self.name = f"s3://{self.bucket}/{self.key}"
        self.min_interval = min_interval
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
        try:
            response = self.client.get_object(**params)
            data: bytes = response["Body"].read()
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
