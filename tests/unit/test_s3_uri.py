"""One reading of ``s3:`` locations for the CLI and the handler's ``flag_source``.

The scheme is case-insensitive (``S3://b/k`` is S3); anything that starts like ``s3:`` but is
not ``s3://bucket/key`` is refused instead of being taken for a local path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_agent_handler import FlagConfigError, _aws
from ai_agent_handler.flag_file.sources import LocalFileSource, S3Source, open_source


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("s3://bucket/key.json", ("bucket", "key.json")),
        ("S3://bucket/key.json", ("bucket", "key.json")),
        ("s3://ops-flags/a/b/production.flagd.json", ("ops-flags", "a/b/production.flagd.json")),
    ],
)
def test_an_s3_uri_in_any_case(location: str, expected: tuple[str, str]) -> None:
    assert _aws.is_s3_uri(location)
    assert _aws.parse_s3_uri(location) == expected
    assert _aws.s3_uri(location) == f"s3://{expected[0]}/{expected[1]}"


MALFORMED = [
    "s3:/bucket/key.json",
    "S3:/bucket/key.json",
    "s3:///key.json",
    "s3://bucket",
    "S3://bucket/",
    "s3:bucket/key.json",
    "s3:",
]


@pytest.mark.parametrize("location", MALFORMED)
def test_a_malformed_s3_location_is_s3_and_refused(location: str) -> None:
    assert _aws.is_s3_uri(location)
    with pytest.raises(FlagConfigError, match="expected s3://bucket/key"):
        _aws.parse_s3_uri(location)


@pytest.mark.parametrize("location", ["flags/s3.json", "./s3:x.json", "/tmp/S3/x.json", "s3"])
def test_paths_stay_paths(location: str) -> None:
    assert not _aws.is_s3_uri(location)


def test_the_handlers_flag_source_reads_the_same_forms(tmp_path: Path) -> None:
    source = open_source("S3://ops-flags/ai-agent/production.flagd.json", s3_client=object())  # type: ignore[arg-type]
    assert isinstance(source, S3Source)
    assert (source.bucket, source.key) == ("ops-flags", "ai-agent/production.flagd.json")
    for location in MALFORMED:
        with pytest.raises(FlagConfigError):
            open_source(location, s3_client=object())  # type: ignore[arg-type]
    assert isinstance(open_source(tmp_path / "s3.json"), LocalFileSource)
