"""Tenant isolation rests on the key; flag files are data from a bucket we own.

* No two distinct valid ``(endpoint_id, part_id)`` pairs produce the same routing key:
  a property test over tens of thousands of generated pairs from a deliberately nasty
  alphabet (the separator, whitespace of every kind, invisible and combining characters,
  surrogate-free astral characters, control characters), with a hand-written generator
  (seeded, so a failure reproduces) instead of a new test dependency.
* An S3 flag file is read with ``ExpectedBucketOwner`` when configured (botocore Stubber
  checks the exact parameters against the S3 model), and without it otherwise.
* Flag rules are data (JsonLogic evaluated by flagd's evaluator), never code: rule text
  that looks like Python is compared, concatenated or refused, never run; nothing that reads
  outside text asks the interpreter to compile, exec, unpickle, unmarshal or import
  (:mod:`tests.support.code_from_text`, under an audit hook).
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from openfeature import api

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, FlagFileProvider, PartitionKeyError, decision
from ai_agent_handler.flag_file.sources import S3Source
from ai_agent_handler.partition_key import SEPARATOR, routing_key
from tests.support import FLAGS_DIR, REPO

# -- the key is injective --------------------------------------------------------------------
ALPHABET = (
    list("abcXYZ019-_.:/|@+=!~*'()[]{}<>?,;%$&^`\"\\")
    + [SEPARATOR] * 4  # the separator, often
    + [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "\u1680", "\u2028", "\u3000", "\x85"]
    + ["\u200b", "\u200d", "\ufeff", "\u202e", "\u0301", "\x00", "\x7f", "\x1b"]
    + [
        "é",
        "e",
        "ß",
        "\u0130",
        "\u0131",
        "中",
        "😀",
        "\U0001f3f3\ufe0f\u200d\U0001f308",
        "%23",
        "&#35;",
    ]
)
SEED = 20251211
PAIRS = 30_000


def _random_id(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.03:
        return None
    if roll < 0.05:
        return rng.choice([0, 1.5, b"ep", ["ep"], True])  # wrong types
    if roll < 0.08:
        return ""
    length = rng.choice([1, 1, 2, 2, 3, 4, 6, 9])
    return "".join(rng.choice(ALPHABET) for _ in range(length))


def _is_valid_component(value: Any) -> bool:
    """The contract's rule, stated independently of the implementation."""
    return isinstance(value, str) and SEPARATOR not in value and value == value.strip()


def _oracle_valid(endpoint: Any, part: Any) -> bool:
    if not (_is_valid_component(endpoint) and endpoint):
        return False
    return part is None or _is_valid_component(part)


def test_no_two_distinct_valid_pairs_share_a_routing_key() -> None:
    rng = random.Random(SEED)
    # Some endpoints recur, so that different parts of one endpoint (and the same part
    # under different endpoints) meet in the same map.
    recurring = [_random_id(rng) for _ in range(50)]
    seen: dict[str, tuple[str, str | None]] = {}
    legacy_keys: set[str] = set()
    valid = invalid = 0
    for _ in range(PAIRS):
        endpoint = rng.choice(recurring) if rng.random() < 0.3 else _random_id(rng)
        part = rng.choice(recurring) if rng.random() < 0.3 else _random_id(rng)
        try:
            key = routing_key(endpoint, part, composite=True)
        except PartitionKeyError:
            invalid += 1
            assert not _oracle_valid(endpoint, part), (endpoint, part)
            continue
        valid += 1
        assert _oracle_valid(endpoint, part), (endpoint, part)
        pair = (endpoint, part or None)  # "" and None both mean "no part" (contract)
        previous = seen.setdefault(key, pair)
        assert previous == pair, f"{previous!r} and {pair!r} share the key {key!r}"
        # The key decodes back to exactly its pair: the separator splits unambiguously.
        assert tuple(key.split(SEPARATOR)) == ((endpoint, part) if part else (endpoint,))
        # The legacy key of the same run is the endpoint, never anyone's composite key.
        legacy = routing_key(endpoint, part, composite=False)
        assert legacy == endpoint and SEPARATOR not in legacy
        legacy_keys.add(legacy)
    composite_keys = {k for k in seen if SEPARATOR in k}
    assert not composite_keys & legacy_keys
    # The generator really explored both sides of the rule.
    assert valid > 3_000 and invalid > 3_000, (valid, invalid)
    print(f"\nkey property: {PAIRS} pairs, {valid} valid, {invalid} refused, 0 collisions")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a#b", "c"), ("a", "b#c")),  # the classic: both would be "a#b#c"
        (("a", "#b"), ("a#", "b")),
        (("a ", "b"), ("a", " b")),  # whitespace that a trim somewhere would merge
        (("a", "b\u00a0"), ("a", "b")),
    ],
)
def test_ambiguous_pairs_are_refused(one: tuple[str, str], other: tuple[str, str]) -> None:
    refused = 0
    for endpoint, part in (one, other):
        try:
            routing_key(endpoint, part, composite=True)
        except PartitionKeyError:
            refused += 1
    assert refused >= 1, "at most one of two pairs that could collide is allowed"


def test_invisible_characters_are_distinct_keys_not_collisions() -> None:
    # Zero-width and combining characters are not whitespace: such ids are accepted and
    # stay distinct byte strings (DynamoDB compares bytes), so they cannot collide. They
    # can look alike in a console; the decision log prints them JSON-escaped.
    keys = {routing_key("ep", part, composite=True) for part in ("e\u0301", "é", "e\u200b", "e")}
    assert len(keys) == 4


# -- ExpectedBucketOwner ---------------------------------------------------------------------
def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


GOOD = (FLAGS_DIR / "dev.flagd.json").read_bytes()


@pytest.mark.parametrize("owner", ["111122223333", None])
def test_s3_flag_file_read_with_expected_bucket_owner_when_configured(owner: str | None) -> None:
    client = boto3.client("s3", region_name="us-east-1")
    stub = Stubber(client)
    first: dict[str, Any] = {"Bucket": "flags", "Key": "dev.flagd.json"}
    if owner:
        first["ExpectedBucketOwner"] = owner
    stub.add_response("get_object", {"Body": _body(GOOD), "ETag": '"v1"'}, first)
    # The freshness check: conditional on the ETag, still with the owner.
    stub.add_client_error(
        "get_object",
        service_error_code="304",
        http_status_code=304,
        expected_params={**first, "IfNoneMatch": '"v1"'},
    )
    # Another account's bucket under the same name: S3 refuses the read.
    stub.add_client_error(
        "get_object",
        service_error_code="AccessDenied",
        http_status_code=403,
        expected_params={**first, "IfNoneMatch": '"v1"'},
    )
    with stub:
        provider = FlagFileProvider(
            "s3://flags/dev.flagd.json",
            s3_client=client,
            min_interval=0,
            expected_bucket_owner=owner,
        )
        api.set_provider_and_wait(provider, domain=FLAG_DOMAIN)
        decisions = [decision.decide("ep", "p", run_uuid=f"r{n}") for n in range(2)]
        stub.assert_no_pending_responses()
    # Both runs on the owner's flags: the refused read kept the last good ones.
    assert [d.routing_key for d in decisions] == ["ep#p", "ep#p"]
    assert provider.fault is not None and "AccessDenied" in provider.fault


def test_source_keeps_the_owner_it_was_configured_with() -> None:
    source = S3Source("s3://flags/dev.flagd.json", client=object(), expected_bucket_owner="1")
    assert source.expected_bucket_owner == "1"


# -- flag rules are data, never code ---------------------------------------------------------
def _flag_file(targeting: Any, *, variants: Any = None, default: str = "legacy") -> bytes:
    return json.dumps(
        {
            "$schema": "https://flagd.dev/schema/v0/flags.json",
            "metadata": {"flagSetId": "ai_agent_handler", "phase": "dev", "version": 1},
            "flags": {
                FLAG_KEY: {
                    "state": "ENABLED",
                    "variants": variants or {"composite": True, "legacy": False},
                    "defaultVariant": default,
                    "targeting": targeting,
                }
            },
        }
    ).encode()


def _code(sentinel: Path) -> str:
    return f"__import__('pathlib').Path({str(sentinel)!r}).touch()"


def test_code_in_a_rule_is_compared_as_text(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    code = _code(sentinel)
    rule = {"if": [{"==": [{"var": "endpoint_id"}, code]}, "composite", "legacy"]}
    path = tmp_path / "flags.json"
    path.write_bytes(_flag_file(rule))
    api.set_provider_and_wait(FlagFileProvider(path, min_interval=0), domain=FLAG_DOMAIN)
    # An endpoint id that *is* the text: equal strings, nothing runs.
    assert decision.decide(code, "p", run_uuid="r1").routing_key == f"{code}#p"
    assert decision.decide("ep", "p", run_uuid="r2").routing_key == "ep"
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda c: _flag_file({"exec": [c]}), id="unknown-operator"),
        pytest.param(lambda c: _flag_file({"eval": c}), id="eval-operator"),
        pytest.param(
            lambda c: _flag_file(None, variants={"composite": c, "legacy": False}),
            id="code-as-variant-value",
        ),
        pytest.param(lambda c: _flag_file(c), id="code-as-targeting-string"),
        pytest.param(lambda c: f"!!python/object/apply:exec [{c!r}]".encode(), id="yaml-tag"),
        pytest.param(lambda c: b"\x80\x04\x95" + c.encode() + b".", id="pickle-bytes"),
    ],
)
def test_code_shaped_flag_files_are_invalid_data(tmp_path: Path, content: Any) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "flags.json"
    path.write_bytes(_flag_file({"if": [True, "composite", "legacy"]}))  # good: composite
    provider = FlagFileProvider(path, min_interval=0, refresh_wait=5)
    api.set_provider_and_wait(provider, domain=FLAG_DOMAIN)
    assert decision.decide("ep", "p", run_uuid="r0").routing_key == "ep#p"
    path.write_bytes(content(_code(sentinel)))
    outcome = decision.decide("ep", "p", run_uuid="r1")
    assert provider.fault is not None, "refused as an invalid flag file"
    assert outcome.routing_key == "ep#p"  # the last good flags, not whatever the file says
    assert not sentinel.exists()


def test_the_package_turns_no_text_into_code(tmp_path: Path) -> None:
    """What reads outside text (flag files, ids, paths, settings) never asks the interpreter to
    compile, exec, unpickle, unmarshal or import: an audit hook, in a process of its own,
    records none of those events while the package handles code-shaped text, and records a
    deliberate ``eval`` and ``pickle.loads`` (so it does see them)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.code_from_text", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["control"] == ["compile", "exec", "pickle.find_class"]
    assert report["calls"] > 100  # every file through every reader, not an early stop
    assert report["recorded"] == []
    assert report["sentinel"] is False
