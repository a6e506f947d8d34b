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
from typing import Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "S3_CLIENT_CONFIG",
    "FlagSource",
    "FlagSourceError",
    "LocalFileSource",
    "S3Source",
    "SourceAccessDenied",
    "SourceNotFound",
    "SourceUnavailable",
    "open_source",
]

#: Default seconds between two freshness checks of a local file.
LOCAL_MIN_INTERVAL = 0.1
#: Default seconds between two conditional GETs of an S3 object.
S3_MIN_INTERVAL = 5.0


class FlagSourceError(Exception):
    """The flag file could not be read; the message names the source and the cause."""


class SourceNotFound(FlagSourceError):
    """The file or object does not exist (deleted, mistyped path, NoSuchKey, NoSuchBucket)."""


class SourceAccessDenied(FlagSourceError):
    """Permission denied on the file, or AccessDenied / bad credentials on the object."""


class SourceUnavailable(FlagSourceError):
    """A transient fault: throttling, timeouts, connection errors, 5xx."""


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

# Error codes as S3 and botocore report them, by what an operator should do about them.
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AccountProblem",
}
_NOT_MODIFIED = {"304", "NotModified"}

# The check runs on the evaluation path: a stuck request would stall the run, so fail fast
# and keep the last good flags instead (the next check is only min_interval away).
S3_CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=2, retries={"max_attempts": 2, "mode": "standard"}
)


class S3Source:
    """A flag file kept as an S3 object, ``s3://bucket/key``.

    ``client`` is a boto3 S3 client (built on first use with short timeouts when omitted,
    because the check runs on the evaluation path). ``expected_bucket_owner`` is sent as
    ``ExpectedBucketOwner`` so a bucket re-created by another account is refused.
    """

    def __init__(
        self,
        uri: str,
        *,
        client: Any = None,
        min_interval: float = S3_MIN_INTERVAL,
        expected_bucket_owner: str | None = None,
    ) -> None:
        self.bucket, self.key = parse_s3_uri(uri)
        self.name = f"s3://{self.bucket}/{self.key}"
        self.min_interval = min_interval
        self.expected_bucket_owner = expected_bucket_owner
        self._client = client
        self._etag: str | None = None

    @property
    def client(self) -> Any:
        """The boto3 S3 client: the injected one, else one built on first use."""
        if self._client is None:
            self._client = _default_s3_client()
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
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in _NOT_MODIFIED:
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
        if code in _NOT_FOUND:
            return SourceNotFound(message)
        if code in _DENIED:
            return SourceAccessDenied(message)
        # Throttling (SlowDown, Throttling, RequestLimitExceeded), timeouts (RequestTimeout)
        # and 5xx are worth retrying at the next interval; so is anything else unexpected.
        return SourceUnavailable(message)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; ``ValueError`` when either is missing."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"an S3 flag source needs s3://bucket/key, got {uri!r}")
    return bucket, key


def _default_s3_client() -> Any:
    import boto3

    return boto3.client("s3", config=S3_CLIENT_CONFIG)


def open_source(
    source: str | os.PathLike[str] | FlagSource,
    *,
    s3_client: Any = None,
    min_interval: float | None = None,
    expected_bucket_owner: str | None = None,
) -> FlagSource:
    """A :class:`FlagSource` for a path, an ``s3://`` URI, or an existing source object."""
    if not isinstance(source, (str, os.PathLike)):
        if min_interval is not None:
            source.min_interval = min_interval
        return source
    location = os.fspath(source)
    if location.startswith("s3://"):
        return S3Source(
            location,
            client=s3_client,
            min_interval=S3_MIN_INTERVAL if min_interval is None else min_interval,
            expected_bucket_owner=expected_bucket_owner,
        )
    return LocalFileSource(
        location, min_interval=LOCAL_MIN_INTERVAL if min_interval is None else min_interval
    )
