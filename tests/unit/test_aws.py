"""The AWS edge: s3:// URIs, error codes, and which credentials a client is built with."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from ai_agent_handler import FlagConfigError, _aws


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/key.json", ("bucket", "key.json")),
        (
            "s3://ops-flags/ai-agent/production.flagd.json",
            ("ops-flags", "ai-agent/production.flagd.json"),
        ),
    ],
)
def test_parse_s3_uri(uri: str, expected: tuple[str, str]) -> None:
    assert _aws.is_s3_uri(uri)
    assert _aws.parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    ["s3://", "s3://bucket", "s3://bucket/", "s3:///key", "s3://bucket/folder/", "/tmp/x.json"],
)
def test_a_uri_without_an_object_is_refused(uri: str) -> None:
    with pytest.raises(FlagConfigError, match="s3://bucket/key"):
        _aws.parse_s3_uri(uri)


def _error(code: str | None, status: int | None, message: str = "it failed") -> ClientError:
    response: dict[str, Any] = {"Error": {"Message": message}}
    if code is not None:
        response["Error"]["Code"] = code
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "expected", "kind"),
    [
        ("NoSuchKey", 404, "NoSuchKey", _aws.NOT_FOUND),
        ("NoSuchBucket", 404, "NoSuchBucket", _aws.NOT_FOUND),
        (None, 404, "404", _aws.NOT_FOUND),  # HEAD answers carry no code
        ("AccessDenied", 403, "AccessDenied", _aws.DENIED),
        (None, 304, "304", _aws.NOT_MODIFIED),
        ("PreconditionFailed", 412, "PreconditionFailed", _aws.CONFLICT),
        ("SlowDown", 503, "SlowDown", None),
        (None, None, "", None),
    ],
)
def test_error_codes_and_what_they_mean(
    code: str | None, status: int | None, expected: str, kind: frozenset[str] | None
) -> None:
    err = _error(code, status)
    assert _aws.error_code(err) == expected
    tables = [_aws.NOT_FOUND, _aws.DENIED, _aws.NOT_MODIFIED, _aws.CONFLICT]
    assert [table for table in tables if expected in table] == ([kind] if kind else [])
    assert _aws.describe(err) == f"{expected or 'error'}: it failed"


FULL = {"region_name": "eu-west-1", "aws_access_key_id": "AK", "aws_secret_access_key": "SK"}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (FULL, FULL),
        ({**FULL, "other": 1}, FULL),
        ({"region_name": "eu-west-1"}, {}),  # all three or none: boto3's chain decides
        ({**FULL, "aws_secret_access_key": ""}, {}),
        ({}, {}),
    ],
)
def test_explicit_credentials_are_all_three_or_none(
    setting: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert _aws.credentials(setting) == expected


def test_clients_carry_the_credentials_and_the_config() -> None:
    client = _aws.lambda_client(FULL)
    assert client.meta.region_name == "eu-west-1"
    assert client._request_signer._credentials.access_key == "AK"
    assert client.meta.config.retries["mode"] == "standard"
    s3 = _aws.s3_client(FULL, config=_aws.FLAG_READ_CONFIG)
    assert s3.meta.config.read_timeout == 2 and s3.meta.config.connect_timeout == 2


def test_the_shared_lambda_client_is_one_per_set_of_credentials() -> None:
    first = _aws.shared_lambda_client({})
    assert _aws.shared_lambda_client({"unrelated": True}) is first
    other = _aws.shared_lambda_client(FULL)
    assert other is not first and _aws.shared_lambda_client(dict(FULL)) is other
