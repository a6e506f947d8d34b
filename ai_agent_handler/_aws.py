"""The AWS edge shared by every part: boto3 clients, ``s3://`` URIs, AWS error codes.

Clients are built here only, on first use (creating a handler makes no network call and
costs no client construction). Explicit credentials are used only when ``region_name``,
``aws_access_key_id`` and ``aws_secret_access_key`` are all in the handler's ``setting``;
otherwise boto3's own chain decides (environment, profile, role, ``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .exceptions import FlagConfigError

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_s3 import S3Client

#: Lambda, SQS and the handler's S3: botocore retries throttling, 5xx, connection errors
#: and timeouts, bounded. The pool is as large as the stream dispatcher's worker count
#: (``transport.stream.DEFAULT_WORKERS``), so background workers never wait for, or discard,
#: a connection.
RETRY_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, max_pool_connections=32)

#: Reading a live flag file from S3 happens on the evaluation path: a stuck request would
#: stall the run, so fail fast and keep the last good flags (the next check is near).
#: Seconds one socket read of a flag file may wait (the whole fetch has its own deadline).
FLAG_READ_TIMEOUT = 2.0
FLAG_READ_CONFIG = Config(
    connect_timeout=2,
    read_timeout=FLAG_READ_TIMEOUT,
    retries={"max_attempts": 2, "mode": "standard"},
)

#: CloudWatch reads by operators' tools (a ramp tick, retire-check): a socket waits at most
#: METRICS_READ_TIMEOUT seconds (connecting: 2), two attempts in all; the caller bounds the
#: whole read (``ops.cloudwatch.counter_sums(deadline=...)``). A hanging CloudWatch is an
#: unreadable one.
METRICS_READ_TIMEOUT = 5.0
METRICS_READ_CONFIG = Config(
    connect_timeout=2,
    read_timeout=METRICS_READ_TIMEOUT,
    retries={"total_max_attempts": 2, "mode": "standard"},
)

# S3 and botocore error codes, by what the caller should do about them.
NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
DENIED = frozenset(
    {
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
)
NOT_MODIFIED = frozenset({"304", "NotModified"})
CONFLICT = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})

_CREDENTIAL_KEYS = ("region_name", "aws_access_key_id", "aws_secret_access_key")


def credentials(setting: Mapping[str, Any]) -> dict[str, Any]:
    """The explicit credentials of ``setting``: all three keys, or none."""
    if all(setting.get(k) for k in _CREDENTIAL_KEYS):
        return {k: setting[k] for k in _CREDENTIAL_KEYS}
    return {}


def lambda_client(setting: Mapping[str, Any]) -> LambdaClient:
    """A new Lambda client with standard-mode retries."""
    return boto3.client("lambda", config=RETRY_CONFIG, **credentials(setting))


def s3_client(
    setting: Mapping[str, Any] | None = None, *, config: Config = RETRY_CONFIG
) -> S3Client:
    """A new S3 client; ``config`` :data:`FLAG_READ_CONFIG` for reads on a run's path."""
    return boto3.client("s3", config=config, **credentials(setting or {}))


def cloudwatch_client() -> CloudWatchClient:
    """A new CloudWatch client on boto3's own chain (``AWS_ENDPOINT_URL`` and
    ``AWS_ENDPOINT_URL_CLOUDWATCH`` included), with :data:`METRICS_READ_CONFIG`."""
    return boto3.client("cloudwatch", config=METRICS_READ_CONFIG)


_shared: dict[tuple[tuple[str, Any], ...], LambdaClient] = {}
_shared_lock = threading.Lock()


def shared_lambda_client(setting: Mapping[str, Any]) -> LambdaClient:
    """One Lambda client per process and set of credentials (boto3 clients are thread-safe).

    Building a client costs tens of milliseconds; callers that pass none share this one.
    """
    key = tuple(sorted(credentials(setting).items()))
    client = _shared.get(key)
    if client is None:
        with _shared_lock:
            client = _shared.get(key)
            if client is None:
                client = _shared[key] = lambda_client(setting)
    return client


def is_s3_uri(location: str) -> bool:
    """True when ``location`` names S3: its scheme is ``s3:`` in any case (``S3://b/k``).

    A malformed one (``s3:/b/k``, ``s3:///k``, ``s3://bucket``) is S3 too, so that
    :func:`parse_s3_uri` refuses it instead of it being taken for a local path.
    """
    return location[:3].lower() == "s3:"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` (scheme in any case) -> ``(bucket, key)``.

    Raises :class:`~ai_agent_handler.FlagConfigError` when the scheme is not followed by
    ``//``, the bucket or the key is missing, or the key names a folder (ends with ``/``).
    """
    rest = uri[len("s3://") :] if is_s3_uri(uri) and uri[3:5] == "//" else ""
    bucket, _, key = rest.partition("/")
    if not bucket or not key or key.endswith("/"):
        raise FlagConfigError(f"not an S3 object URI (expected s3://bucket/key): {uri!r}")
    return bucket, key


def s3_uri(location: str) -> str:
    """``location`` as the canonical ``s3://bucket/key`` (lower-case scheme); raises like
    :func:`parse_s3_uri`."""
    bucket, key = parse_s3_uri(location)
    return f"s3://{bucket}/{key}"


def error_code(err: BaseException) -> str:
    """The AWS error code (``NoSuchKey``, ``Throttling``, ...), else the HTTP status, else ""
    (also for an error that is not AWS's answer)."""
    if not isinstance(err, ClientError):
        return ""
    response = err.response
    code = response.get("Error", {}).get("Code")
    if code:
        return str(code)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return "" if status is None else str(status)


#: What a boto3 call raises: the service's answer, or botocore's own (connection, config).
ERRORS = (ClientError, BotoCoreError)


def describe(err: ClientError | BotoCoreError) -> str:
    """``"<code>: <message>"`` (botocore's own errors: their text) for a one-line message."""
    if not isinstance(err, ClientError):
        return str(err)
    message = err.response.get("Error", {}).get("Message") or str(err)
    return f"{error_code(err) or 'error'}: {message}"
