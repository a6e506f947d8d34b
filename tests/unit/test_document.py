"""flag_file.document: what a valid flag file is; the shipped phase files resolve as documented."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler import FLAG_KEY, FlagFileProvider
from ai_agent_handler.exceptions import FlagFileError
from ai_agent_handler.flag_file.document import (
    fingerprint,
    flag_set_version,
    flagd_problems,
    parse,
    validate,
)
from tests.support import FLAGS_DIR
from tests.support.flags import context, dump, phase_doc, rollout, started, value

ENDPOINTS = [f"endpoint-{i}" for i in range(200)]


def _flag(doc: dict[str, Any]) -> dict[str, Any]:
    flag: dict[str, Any] = doc["flags"][FLAG_KEY]
    return flag


def _set(path: str, new: object) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``a.b.c`` (flag properties under ``flag.``) to ``new``."""

    def mutate(doc: dict[str, Any]) -> None:
        parts = path.split(".")
        target: Any = _flag(doc) if parts[0] == "flag" else doc
        for part in parts[1:-1] if parts[0] == "flag" else parts[:-1]:
            target = target[int(part)] if isinstance(target, list) else target[part]
        last = parts[-1]
        if new is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = new
        else:
            target[last] = new

    return mutate


_DELETE = object()

# (id, mutation of a valid staging document, words the first problem must contain)
FAULTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("flags-missing", _set("flags", _DELETE), "flags is missing"),
    ("flags-not-object", _set("flags", []), "flags must be an object"),
    ("state", _set("flag.state", "ON"), "state 'ON' is not ENABLED or DISABLED"),
    ("variants-empty", _set("flag.variants", {}), "variants must be a non-empty object"),
    ("variants-mixed", _set("flag.variants.legacy", "no"), "variants mix JSON types"),
    ("variants-int", _set("flag.variants.legacy", 0), "variants mix JSON types"),
    (
        "variants-renamed",
        _set("flag.variants", {"on": True, "off": False}),
        "defaultVariant 'legacy' is not a variant",
    ),
    (
        "default-not-variant",
        _set("flag.defaultVariant", "x"),
        "flags.composite-partition-key.defaultVariant 'x' is not a variant",
    ),
    ("default-not-string", _set("flag.defaultVariant", False), "defaultVariant false is not"),
    ("targeting-string", _set("flag.targeting", "composite"), "targeting must be an object"),
    (
        "if-result-not-variant",
        _set("flag.targeting.if.1", "on"),
        "targeting.if[1] can return 'on', which is not a variant",
    ),
    (
        "fractional-bucket-not-variant",
        _set("flag.targeting.if.2.fractional.1.0", "compo"),
        "targeting.if[2].fractional[1] can return 'compo'",
    ),
    (
        "targeting-returns-boolean",
        _set("flag.targeting", {"in": [{"var": "endpoint_id"}, ["ep-a"]]}),
        "targeting fails for endpoint 'ep-a'",
    ),
    (
        "targeting-returns-context-value",
        _set("flag.targeting", {"var": "endpoint_id"}),
        "targeting fails for endpoint",
    ),
    ("unknown-property", _set("flag.default", "legacy"), "default is not a flag property"),
    (
        "flag-missing",
        _set("flags", {"other": _flag(phase_doc("dev"))}),
        f"flags.{FLAG_KEY} is missing",
    ),
    ("version-missing", _set("metadata.version", _DELETE), "metadata.version is missing"),
    ("version-bool", _set("metadata.version", True), "metadata.version true must be"),
    ("version-float", _set("metadata.version", 1.5), "metadata.version 1.5 must be"),
    ("metadata-not-object", _set("metadata", "v1"), "metadata must be an object"),
    ("metadata-nested", _set("metadata.owner", {"team": "x"}), "metadata.owner must be a string"),
    (
        "ref-missing",
        _set("flag.targeting", {"$ref": "nowhere"}),
        "refers to $ref 'nowhere' which is not in $evaluators",
    ),
    ("evaluators-not-object", _set("$evaluators", []), "$evaluators must be an object"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
def test_each_fault_is_reported_and_refused(
    mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    doc = phase_doc("staging")
    mutate(doc)
    problems = validate(doc)
    assert problems, "the fault went unnoticed"
    assert any(expected in p for p in problems), problems
    with pytest.raises(FlagFileError) as caught:
        parse(dump(doc), source="flags/x.json")
    message = str(caught.value)
    assert message.startswith("flags/x.json: ") and "\n" not in message
    assert caught.value.problems == problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty document"),
        (b"   \n", "empty document"),
        (b"\x00\xff\xfe garbage", "not UTF-8 text (bad byte at offset 1)"),
        (b'{"flags": {', "invalid JSON at line 1"),
        (dump(phase_doc("staging"))[:200], "invalid JSON"),  # half-written
        (b"[]", "the document must be a JSON object, not array"),
        (b'{"flags": {}, "flags": {}}', "duplicate key 'flags'"),
        (b'{"flags": {}, "metadata": {"version": NaN}}', "NaN is not JSON"),
    ],
    ids=["empty", "blank", "garbage", "truncated", "half-written", "array", "dup", "nan"],
)
def test_parse_refuses_what_is_not_a_flag_file(data: bytes, expected: str) -> None:
    with pytest.raises(FlagFileError, match=r"^s3://b/k: ") as caught:
        parse(data, source="s3://b/k")
    assert expected in str(caught.value)


def test_parse_accepts_bom_and_str() -> None:
    text = dump(phase_doc("staging")).decode()
    assert parse(b"\xef\xbb\xbf" + text.encode()) == parse(text) == phase_doc("staging")


@pytest.mark.parametrize("phase", ["dev", "staging", "production"])
def test_shipped_files_are_valid(phase: str) -> None:
    doc = parse((FLAGS_DIR / f"{phase}.flagd.json").read_bytes(), source=phase)
    assert validate(doc) == []
    assert doc["metadata"]["phase"] == phase
    assert doc["metadata"]["flagSetId"] == "ai_agent_handler"
    assert isinstance(doc["metadata"]["version"], int)
    assert _flag(doc)["variants"] == {"composite": True, "legacy": False}


def _resolve_all(tmp_path: Path, doc: dict[str, Any]) -> dict[str, bool]:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(doc))
    provider = FlagFileProvider(path)
    started(provider)
    return {e: value(provider, e) for e in ENDPOINTS}


@pytest.mark.parametrize(
    ("phase", "expected"), [("dev", True), ("staging", False), ("production", False)]
)
def test_shipped_files_resolve_as_documented(tmp_path: Path, phase: str, expected: bool) -> None:
    shutil.copy(FLAGS_DIR / f"{phase}.flagd.json", tmp_path / "flags.json")
    provider = FlagFileProvider(tmp_path / "flags.json")
    started(provider)
    assert {value(provider, e) for e in ENDPOINTS} == {expected}
    details = provider.resolve_boolean_details(FLAG_KEY, not expected, context("ep", "p"))
    assert details.variant == ("composite" if expected else "legacy")
    assert details.flag_metadata["phase"] == phase
    assert details.flag_metadata["version"] == 1


@pytest.mark.parametrize("phase", ["staging", "production"])
def test_allow_list_and_percentage_work_when_filled(tmp_path: Path, phase: str) -> None:
    allowed = _resolve_all(tmp_path, rollout(phase, allow=["endpoint-7", "endpoint-9"]))
    assert {e for e, v in allowed.items() if v} == {"endpoint-7", "endpoint-9"}
    everyone = _resolve_all(tmp_path, rollout(phase, percent=100))
    assert set(everyone.values()) == {True}
    quarter = _resolve_all(tmp_path, rollout(phase, percent=25))
    assert 30 <= sum(quarter.values()) <= 70  # 25 % of 200, generously


def test_flagd_level_accepts_generic_files() -> None:
    generic = {"flags": {"color": {"state": "ENABLED", "variants": {"r": "red"}}}}
    assert flagd_problems(generic) == []
    assert "metadata.version is missing" in validate(generic)
    assert parse(json.dumps(generic), strict=False) == generic


def test_what_flagd_core_refuses_is_a_problem_not_an_exception() -> None:
    # Passes the structural checks; flagd-core's own loader refuses an empty metadata key.
    doc = phase_doc("dev")
    doc["metadata"][""] = 1
    assert flagd_problems(doc) == ["flagd refuses the document: key must not be empty"]
    with pytest.raises(FlagFileError, match="key must not be empty"):
        parse(dump(doc))


def test_fingerprint_ignores_layout_only() -> None:
    doc = phase_doc("staging")
    same = json.loads(json.dumps(doc, indent=None))
    assert fingerprint(doc) == fingerprint(same)
    assert fingerprint(doc) != fingerprint(rollout(percent=1, version=1))
    assert flag_set_version(doc) == "1"
    assert flag_set_version({"flags": {}}) is None
