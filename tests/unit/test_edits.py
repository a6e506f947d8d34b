"""ops.edits: the flag's state in plain words and the pure transformations operators use."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from ai_agent_handler import FLAG_KEY
from ai_agent_handler.ops import edits as fe
from tests.support import FLAGS_DIR as FLAGS


def shipped(phase: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FLAGS / f"{phase}.flagd.json").read_text())
    return doc


def composite_endpoints(doc: dict[str, Any], endpoints: list[str]) -> set[str]:
    """Which endpoints the real flagd evaluator puts on the composite key."""
    core = FlagdCore()
    core.set_flags(doc)
    out = set()
    for endpoint in endpoints:
        ctx = EvaluationContext(targeting_key=endpoint, attributes={"endpoint_id": endpoint})
        if core.resolve_boolean_value(FLAG_KEY, False, ctx).value:
            out.add(endpoint)
    return out


ENDPOINTS = [f"endpoint-{i:04d}" for i in range(400)]


def flag(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["flags"][FLAG_KEY]
    return result


# -- reading the state ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "kind", "words"),
    [
        ("dev", "composite-everywhere", "composite everywhere"),
        ("staging", "legacy-everywhere", "legacy everywhere"),
        ("production", "legacy-everywhere", "legacy everywhere"),
    ],
)
def test_shipped_files_read_as_documented(phase: str, kind: str, words: str) -> None:
    state = fe.read_state(shipped(phase))
    assert state.kind == kind
    assert state.describe().startswith(words)


@pytest.mark.parametrize(
    ("edit", "kind", "words"),
    [
        (lambda d: fe.set_percent(d, 30), "percent", "composite for 30 % of endpoints"),
        (lambda d: fe.allow(d, ["a", "b"]), "allow-list", "composite for 2 allow-listed"),
        (
            lambda d: fe.set_percent(fe.allow(d, ["a"]), 5),
            "allow-list-and-percent",
            "composite for 1 allow-listed endpoint(s) (a) and 5 % of the others",
        ),
        (lambda d: fe.set_percent(d, 100), "composite-everywhere", "composite everywhere"),
        (lambda d: fe.set_everywhere(d, "composite"), "composite-everywhere", "composite every"),
        (lambda d: fe.rollback(fe.set_percent(d, 50)), "legacy-everywhere", "legacy everywhere"),
    ],
)
def test_state_after_edits(edit: Any, kind: str, words: str) -> None:
    state = fe.read_state(edit(shipped("production")))
    assert state.kind == kind
    assert state.describe().startswith(words)


def test_disabled_missing_and_custom_are_named() -> None:
    doc = shipped("staging")
    flag(doc)["state"] = "DISABLED"
    assert fe.read_state(doc).kind == "disabled"
    assert "DISABLED" in fe.read_state(doc).describe()
    doc = shipped("staging")
    flag(doc)["targeting"] = {"if": [{"starts_with": [{"var": "endpoint_id"}, "eu-"]}, "composite"]}
    assert fe.read_state(doc).kind == "custom"
    # A seed other than the canonical one reshuffles endpoints: not the canonical shape.
    doc = fe.set_percent(shipped("staging"), 10)
    flag(doc)["targeting"]["if"][2]["fractional"][0] = {"var": "endpoint_id"}
    assert fe.read_state(doc).kind == "custom"
    assert fe.read_state({"flags": {}}).kind == "missing"


# -- transformations ----------------------------------------------------------------------


def test_transformations_never_modify_their_input() -> None:
    doc = shipped("production")
    before = copy.deepcopy(doc)
    fe.allow(doc, ["x"])
    fe.set_percent(doc, 40)
    fe.set_everywhere(doc, "composite")
    fe.rollback(doc)
    fe.bump_version(doc)
    assert doc == before


def test_canonical_targeting_is_what_team_notes_show() -> None:
    doc = fe.allow(fe.set_percent(shipped("production"), 25), ["ep-a"])
    assert flag(doc)["targeting"] == {
        "if": [
            {"in": [{"var": "endpoint_id"}, ["ep-a"]]},
            "composite",
            {
                "fractional": [
                    {"cat": ["pk-rollout-", {"var": "targetingKey"}]},
                    ["composite", 25],
                    ["legacy", 75],
                ]
            },
        ]
    }
    assert flag(doc)["variants"] == {"composite": True, "legacy": False}


def test_allow_is_idempotent_and_disallow_keeps_the_order() -> None:
    doc = fe.allow(shipped("staging"), ["b", "a", "b"])
    doc = fe.allow(doc, ["a", "c"])
    assert fe.read_state(doc).allowed == ("b", "a", "c")
    assert fe.allow(doc, ["c", "a"]) == doc
    doc = fe.disallow(doc, ["a"])
    assert fe.read_state(doc).allowed == ("b", "c")


@pytest.mark.parametrize(
    ("listed", "remove", "fragments"),
    [
        (["aws-prod-eu-west-1"], ["aws-prod-eu-west1"], ["did you mean aws-prod-eu-west-1?"]),
        (["a-1", "b-2"], ["a-1", "zzz"], ["cannot disallow zzz:", "listed: a-1, b-2"]),
        ([], ["nobody"], ["the allow-list is empty"]),
        ([f"ep-{i:02d}" for i in range(20)], ["x"], ["ep-00", "ep-07, ... (+12 more)"]),
    ],
)
def test_disallow_of_an_endpoint_that_is_not_listed_is_refused(
    listed: list[str], remove: list[str], fragments: list[str]
) -> None:
    doc = fe.allow(shipped("production"), listed) if listed else shipped("production")
    with pytest.raises(fe.FlagEditError, match="not on the allow-list") as caught:
        fe.disallow(doc, remove)
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("phase", "edit"),
    [
        ("dev", lambda d: fe.set_percent(d, 100)),
        ("dev", lambda d: fe.set_everywhere(d, "composite")),
        ("production", lambda d: fe.set_percent(d, 0)),
        ("production", lambda d: fe.set_everywhere(d, "legacy")),
        ("production", fe.rollback),
    ],
)
def test_an_edit_that_keeps_the_meaning_of_the_document_returns_it_unchanged(
    phase: str, edit: Any
) -> None:
    doc = shipped(phase)
    assert edit(doc) == doc


def test_a_plain_legacy_switch_stays_plain_at_0_percent() -> None:
    plain = fe.set_everywhere(shipped("dev"), "legacy")
    assert fe.set_percent(plain, 0) == plain
    assert fe.read_state(fe.set_percent(plain, 5)).kind == "percent"


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (None, None),
        (b"", None),
        (b"\x00\xff", None),
        (b'{"metadata": {"version": 4}}', 4),
        (b'{"metadata": {"version": "12"}}', 12),
        (b'{"metadata": {"version": 4, "phase": "produ', 4),
        (b'{"metadata": {"version" : "7"', 7),
        (b'{"flags": {"a": {"metadata": {"version": 3}}}, "metadata": {"version": 9', 9),
        (b"[" * 10_000, None),
    ],
)
def test_loose_version_reads_what_a_broken_file_still_says(
    data: bytes | None, version: int | None
) -> None:
    assert fe.loose_version(data) == version


@pytest.mark.parametrize(
    ("name", "like"),
    [
        ("aws-prod-eu-west1", ["aws-prod-eu-west-1"]),
        ("AWS_prod.eu-west-1", ["aws-prod-eu-west-1"]),
        ("aws-prod-eu-west-2", []),
        ("aws-prod-eu-west-1", []),  # the same name is not a look-alike
    ],
)
def test_spelled_like_finds_the_same_name_typed_differently(name: str, like: list[str]) -> None:
    assert fe.spelled_like(name, ["aws-prod-eu-west-1", "aws-prod-us-east-2"]) == like


def test_allow_list_gets_composite_from_the_real_evaluator() -> None:
    doc = fe.allow(shipped("production"), ["endpoint-0007", "endpoint-0300"])
    assert composite_endpoints(doc, ENDPOINTS) == {"endpoint-0007", "endpoint-0300"}


def test_percent_is_monotonic_and_keeps_the_allow_list() -> None:
    """Raising N never moves an endpoint from composite back to legacy (real evaluator)."""
    doc = fe.allow(shipped("production"), ["endpoint-0001"])
    previous: set[str] = {"endpoint-0001"}
    for percent in (0, 1, 5, 10, 25, 26, 50, 75, 99, 100):
        chosen = composite_endpoints(fe.set_percent(doc, percent), ENDPOINTS)
        assert previous <= chosen, f"endpoints left composite at {percent} %"
        assert "endpoint-0001" in chosen
        previous = chosen
    assert previous == set(ENDPOINTS)


def test_percent_is_roughly_the_share_of_endpoints() -> None:
    chosen = composite_endpoints(fe.set_percent(shipped("production"), 30), ENDPOINTS)
    assert 0.2 * len(ENDPOINTS) < len(chosen) < 0.4 * len(ENDPOINTS)


def test_plain_switch_converts_to_the_same_meaning() -> None:
    dev = shipped("dev")
    assert fe.read_state(fe.allow(dev, ["x"])).kind == "composite-everywhere"
    assert fe.read_state(fe.set_everywhere(dev, "legacy")).plain
    assert flag(fe.set_everywhere(dev, "legacy"))["defaultVariant"] == "legacy"
    assert "targeting" not in flag(fe.rollback(dev))
    assert fe.read_state(fe.rollback(dev)).kind == "legacy-everywhere"


def test_set_composite_keeps_the_allow_list_and_legacy_clears_it() -> None:
    doc = fe.set_percent(fe.allow(shipped("staging"), ["a"]), 10)
    assert fe.read_state(fe.set_everywhere(doc, "composite")).allowed == ("a",)
    legacy = fe.set_everywhere(doc, "legacy")
    assert fe.read_state(legacy).allowed == ()
    assert composite_endpoints(legacy, ["a", *ENDPOINTS]) == set()


@pytest.mark.parametrize(
    "start",
    [
        lambda d: fe.set_percent(fe.allow(d, ["a", "b"]), 60),
        lambda d: fe.set_everywhere(d, "composite"),
        lambda d: {**d, "flags": {FLAG_KEY: {**flag(d), "state": "DISABLED"}}},
        lambda d: {
            **d,
            "flags": {FLAG_KEY: {**flag(d), "targeting": {"if": [True, "composite", None]}}},
        },
    ],
    ids=["allow+percent", "composite", "disabled", "custom"],
)
def test_rollback_gives_legacy_for_every_endpoint(start: Any) -> None:
    rolled = fe.rollback(start(shipped("production")))
    assert fe.read_state(rolled).kind == "legacy-everywhere"
    assert fe.read_state(rolled).canonical  # allow/percent work right after
    assert composite_endpoints(rolled, ["a", "b", *ENDPOINTS]) == set()
    assert rolled["metadata"] == shipped("production")["metadata"]


def test_rollback_of_an_unreadable_or_flagless_file() -> None:
    fresh = fe.rollback(None, phase="staging")
    assert fe.read_state(fresh).kind == "legacy-everywhere"
    assert fresh["metadata"]["phase"] == "staging"
    other = {"flags": {"other": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"}}}
    rolled = fe.rollback(other, phase="dev")
    assert set(rolled["flags"]) == {"other", FLAG_KEY}
    assert fe.read_state(rolled).kind == "legacy-everywhere"


def test_restore_commands_rebuild_the_state_before_rollback() -> None:
    before = fe.set_percent(fe.allow(shipped("production"), ["a", "b"]), 20)
    commands = fe.restore_commands(fe.read_state(before))
    assert commands == [("allow", "a", "b"), ("percent", "20")]
    doc = fe.rollback(before)
    for command in commands:
        verb, *args = command
        doc = fe.allow(doc, args) if verb == "allow" else fe.set_percent(doc, int(args[0]))
    assert fe.read_state(doc) == fe.read_state(before)


def test_bump_version() -> None:
    doc = shipped("staging")
    assert fe.version_of(fe.bump_version(doc)) == fe.version_of(doc) + 1  # type: ignore[operator]
    assert fe.version_of(fe.bump_version({"flags": {}})) == 1
    assert fe.bump_version({"metadata": {"version": "7"}})["metadata"]["version"] == 8


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: fe.set_percent(d, 101), "0 to 100"),
        (lambda d: fe.set_percent(d, -1), "0 to 100"),
        (lambda d: fe.set_percent(d, True), "0 to 100"),
        (lambda d: fe.allow(d, ["a#b"]), "must not contain"),
        (lambda d: fe.allow(d, [" a"]), "whitespace"),
        (lambda d: fe.allow(d, [""]), "empty"),
        (lambda d: fe.allow(d, []), "at least one"),
        (lambda d: fe.set_everywhere(d, "maybe"), "composite' or 'legacy"),
        (lambda d: fe.allow({"flags": {}}, ["a"]), "no flag"),
    ],
)
def test_bad_edits_raise_with_a_reason(edit: Any, message: str) -> None:
    with pytest.raises(fe.FlagEditError, match=message):
        edit(shipped("production"))


@pytest.mark.parametrize("state", ["DISABLED", "custom"])
def test_allow_and_percent_refuse_what_they_cannot_edit(state: str) -> None:
    doc = shipped("production")
    if state == "DISABLED":
        flag(doc)["state"] = "DISABLED"
    else:
        flag(doc)["targeting"] = {"if": [True, "composite", None]}
    with pytest.raises(fe.FlagEditError, match="rollback"):
        fe.allow(doc, ["a"])
    with pytest.raises(fe.FlagEditError, match="rollback"):
        fe.set_percent(doc, 10)
