"""The backfill's decisions: the map, what each item becomes, digests, checkpoints, the
capacity limit and the verification's tallies (no I/O)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from ai_agent_handler import BackfillError
from ai_agent_handler.ops.backfill import (
    Backfilled,
    Checkpoint,
    Counts,
    Job,
    Limiter,
    Planned,
    Tally,
    Verified,
    Worker,
    backoff,
    checked_part,
    item_digest,
    key_from_json,
    key_to_json,
    mapping_rule,
    merge_records,
    parse_map,
    plan_item,
    progress_line,
    size_units,
)
from ai_agent_handler.ops.backfill_io import function_rule

CSV_HEADER = "legacy_key,endpoint_id,part_id\n"


# -- the map ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CSV_HEADER + "acme-prod,aws-prod,acme\n", {"acme-prod": ("aws-prod", "acme")}),
        (CSV_HEADER + "a,e1,p1\n\nb,e2,p2\n", {"a": ("e1", "p1"), "b": ("e2", "p2")}),
        ("\ufeff" + CSV_HEADER + "a,e,p\n", {"a": ("e", "p")}),  # a spreadsheet's BOM
        (" legacy_key , endpoint_id , part_id \na,e,p\n", {"a": ("e", "p")}),
        ('{"a": ["e", "p"], "b": ["e", "q"]}', {"a": ("e", "p"), "b": ("e", "q")}),
        ("{}", {}),
        (CSV_HEADER, {}),
    ],
)
def test_a_map_is_csv_or_json(text: str, expected: dict[str, tuple[str, str]]) -> None:
    assert parse_map(text, source="parts") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "starts with the header legacy_key,endpoint_id,part_id"),
        ("key,endpoint,part\na,e,p\n", "starts with the header"),
        (CSV_HEADER + "a,e\n", "parts line 2: 3 cells expected, got 2"),
        (CSV_HEADER + "a,e,p\na,e,q\n", "line 3: legacy key 'a' is given twice"),
        (CSV_HEADER + "a,e#x,p\n", "line 2: endpoint_id must not contain '#'"),
        (CSV_HEADER + "a,e,p#x\n", "part_id must not contain '#'"),
        (CSV_HEADER + "a,e, p\n", "part_id must not have surrounding whitespace"),
        (CSV_HEADER + "a,e,\n", "endpoint_id and part_id must both be set"),
        (CSV_HEADER + ",e,p\n", "a legacy key must be a non-empty string"),
        ('{"a": ["e", "p"], "a": ["e", "q"]}', "'a' is given twice"),
        ('{"a": "e#p"}', "'a' must map to [endpoint_id, part_id]"),
        ('{"a": ["e", "p", "x"]}', "must map to [endpoint_id, part_id]"),
        ('{"a": ["e", 7]}', "part_id must be a string"),
        ('{"a": ["e", "p"]', "not a JSON mapping"),
        ('{" a": ["e", "p"]}', "a legacy key must be a non-empty string"),
    ],
)
def test_a_bad_map_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BackfillError, match=r"^parts") as caught:
        parse_map(text, source="parts")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("found", "expected"),
    [(None, None), (("e", "p"), ("e", "p")), (["e", "p"], ("e", "p"))],
)
def test_a_part_function_returns_a_pair_or_none(found: Any, expected: Any) -> None:
    assert checked_part(found, "mod:fn") == expected


@pytest.mark.parametrize(
    ("found", "message"),
    [
        ("e#p", "must return (endpoint_id, part_id) or None"),
        (("e",), "must return (endpoint_id, part_id) or None"),
        (("e", "p#q"), "part_id must not contain '#'"),
        (("", "p"), "must both be set"),
        ((1, "p"), "endpoint_id must be a string"),
    ],
)
def test_what_a_part_function_returns_is_checked(found: Any, message: str) -> None:
    with pytest.raises(BackfillError, match=r"^mod:fn") as caught:
        checked_part(found, "mod:fn")
    assert message in str(caught.value)


# -- the job and the workers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source_key": "pk", "target_key": "partition_key", "target_table": "t"}, "one partition"),
        ({"target_key": "endpoint_id"}, "would be overwritten by the mapped endpoint_id"),
        ({"target_key": "part_id"}, "would be overwritten"),
        ({"segments": 0}, "segments must be from 1"),
        ({"segments": True}, "segments must be from 1"),
        ({"source_table": ""}, "source-table must be a name"),
        ({"target_key": " pk"}, "target-key must be a name"),
    ],
)
def test_a_job_that_cannot_work_is_refused(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"source_table": "t", "target_table": "u", **kwargs}
    with pytest.raises(BackfillError, match=message):
        Job(**arguments)


def test_the_checkpoint_folder_names_the_tables_and_keys_safely() -> None:
    assert Job("old", "new").name == "old.endpoint_id--new.partition_key"
    assert Job("a/b", "a/b", "p k", "p k").name == "a_b.p_k--a_b.p_k"


@pytest.mark.parametrize(
    ("text", "total", "segments"),
    [("0/1", 3, [0, 1, 2]), ("0/2", 4, [0, 2]), ("1/2", 4, [1, 3]), ("2/3", 8, [2, 5])],
)
def test_a_worker_takes_every_nth_segment(text: str, total: int, segments: list[int]) -> None:
    assert Worker.parse(text).segments(total) == segments


def test_the_workers_share_the_segments_exactly() -> None:
    taken = [s for i in range(3) for s in Worker(i, 3).segments(10)]
    assert sorted(taken) == list(range(10))


@pytest.mark.parametrize("text", ["1", "2/2", "-1/2", "a/b", "0/0", "1/", "/2", ""])
def test_a_bad_worker_is_refused(text: str) -> None:
    with pytest.raises(BackfillError, match="--worker takes I/N"):
        Worker.parse(text)


def test_more_workers_than_segments_is_refused() -> None:
    with pytest.raises(BackfillError, match="3 workers need at least 3 segments"):
        Worker(0, 3).segments(2)


# -- the items ------------------------------------------------------------------------------

RULE = mapping_rule({"acme-prod": ("aws-prod", "acme")})
ITEM = {"endpoint_id": {"S": "acme-prod"}, "sk": {"S": "agent#1"}, "n": {"N": "3"}}
SEPARATE = Job("old", "new")
SAME = Job("t", "t", "pk", "pk")


@pytest.mark.parametrize(
    ("item", "job", "range_key", "kind", "legacy"),
    [
        (ITEM, SEPARATE, "sk", "copy", "acme-prod"),
        ({**ITEM, "endpoint_id": {"S": "other"}}, SEPARATE, "sk", "unmapped", "other"),
        ({"sk": {"S": "x"}}, SEPARATE, "sk", "invalid", "no string endpoint_id attribute"),
        ({**ITEM, "endpoint_id": {"N": "1"}}, SEPARATE, "sk", "invalid", None),
        ({**ITEM, "endpoint_id": {"S": ""}}, SEPARATE, "sk", "invalid", None),
        ({"endpoint_id": {"S": "acme-prod"}}, SEPARATE, "sk", "invalid", None),
        ({**ITEM, "endpoint_id": {"S": "a#b"}}, SEPARATE, "sk", "invalid", None),
        ({"pk": {"S": "aws-prod#acme"}, "sk": {"S": "x"}}, SAME, "sk", "composite", None),
        ({"pk": {"S": "acme-prod"}, "sk": {"S": "x"}}, SAME, "sk", "copy", "acme-prod"),
        ({"pk": {"S": "acme-prod"}}, SAME, None, "copy", "acme-prod"),
    ],
)
def test_what_each_item_becomes(
    item: dict[str, Any], job: Job, range_key: str | None, kind: str, legacy: str | None
) -> None:
    planned = plan_item(item, job, RULE, range_key)
    assert planned.kind == kind
    if legacy is not None:
        assert planned.legacy == legacy


def test_an_item_no_rule_maps_is_never_guessed() -> None:
    planned = plan_item({**ITEM, "endpoint_id": {"S": "acme-prod2"}}, SEPARATE, RULE, "sk")
    assert planned == Planned("unmapped", "acme-prod2")


def test_the_target_item_carries_everything_and_adds_the_ids() -> None:
    planned = plan_item(ITEM, SEPARATE, RULE, "sk")
    assert planned.composite == "aws-prod#acme"
    assert planned.item == {
        "endpoint_id": {"S": "aws-prod"},
        "part_id": {"S": "acme"},
        "partition_key": {"S": "aws-prod#acme"},
        "sk": {"S": "agent#1"},
        "n": {"N": "3"},
    }


def test_in_the_same_table_the_key_itself_becomes_composite() -> None:
    planned = plan_item({"pk": {"S": "acme-prod"}, "sk": {"S": "run#1"}}, SAME, RULE, "sk")
    assert planned.item == {
        "pk": {"S": "aws-prod#acme"},
        "sk": {"S": "run#1"},
        "endpoint_id": {"S": "aws-prod"},
        "part_id": {"S": "acme"},
    }


def test_a_part_function_sees_the_item_as_boto3s_resource_api_shows_it() -> None:
    seen: list[dict[str, Any]] = []

    def part_of(item: dict[str, Any]) -> tuple[str, str]:
        seen.append(item)
        return ("aws-prod", str(item["tenant"]))

    rule = function_rule(part_of, "mod:part_of")
    item = {**ITEM, "tenant": {"S": "acme"}, "tags": {"SS": ["a"]}, "blob": {"B": b"\x01"}}
    planned = plan_item(item, SEPARATE, rule, "sk")
    assert planned.composite == "aws-prod#acme"
    from decimal import Decimal

    assert seen[0]["n"] == Decimal(3)
    assert seen[0]["tags"] == {"a"}


@pytest.mark.parametrize(
    ("function", "why"),
    [
        (lambda item: 1 / 0, "mod:fn raised ZeroDivisionError: division by zero"),
        (lambda item: ("e", "p#q"), "part_id must not contain '#'"),
        (lambda item: "e#p", "must return (endpoint_id, part_id) or None"),
    ],
)
def test_a_failing_part_function_makes_that_item_invalid(function: Any, why: str) -> None:
    planned = plan_item(ITEM, SEPARATE, function_rule(function, "mod:fn"), "sk")
    assert planned.kind == "invalid"
    assert why in str(planned.legacy)


# -- digests and keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ({"a": {"SS": ["x", "y"]}}, {"a": {"SS": ["y", "x"]}}, True),
        ({"a": {"B": b"\x00"}}, {"a": {"B": bytearray(b"\x00")}}, True),
        ({"a": {"S": "1"}}, {"a": {"N": "1"}}, False),
        ({"a": {"L": [{"S": "x"}, {"S": "y"}]}}, {"a": {"L": [{"S": "y"}, {"S": "x"}]}}, False),
        ({"a": {"M": {"b": {"S": "x"}}}}, {"a": {"M": {"b": {"S": "x"}}}}, True),
        ({"a": {"S": "x"}}, {"a": {"S": "x"}, "b": {"NULL": True}}, False),
    ],
)
def test_a_digest_is_of_content(one: dict[str, Any], other: dict[str, Any], same: bool) -> None:
    assert (item_digest(one) == item_digest(other)) is same


@pytest.mark.parametrize(
    "key",
    [
        {"pk": {"S": "a"}, "sk": {"S": "b"}},
        {"pk": {"B": b"\x00\xff"}, "sk": {"N": "12.5"}},
        None,
    ],
)
def test_a_scan_position_survives_json(key: dict[str, Any] | None) -> None:
    import json

    assert key_from_json(json.loads(json.dumps(key_to_json(key)))) == key


def test_capacity_units_of_an_item_are_its_size_rounded_up() -> None:
    assert size_units({"a": {"S": "x"}}, 1024) == 1
    assert size_units({"a": {"S": "x" * 3000}}, 1024) == 3


# -- counts and checkpoints ---------------------------------------------------------------------


def test_counts_keep_every_kind_and_the_unmapped_keys() -> None:
    counts = Counts()
    for planned in [
        Planned("copy", "a", "e#p", {}),
        Planned("copy", "a", "e#p", {}),
        Planned("unmapped", "x"),
        Planned("composite", "e#q"),
        Planned("invalid", "no string endpoint_id attribute"),
    ]:
        counts.count(planned)
    assert (counts.scanned, counts.unmapped, counts.composite, counts.invalid) == (5, 1, 1, 1)
    assert counts.endpoints == {"e#p": 2}
    assert counts.unmapped_keys == {"x": 1}
    assert counts.samples == ["invalid item: no string endpoint_id attribute"]


def test_unmapped_keys_are_kept_by_name_up_to_a_hundred_and_all_are_counted() -> None:
    counts = Counts()
    for n in range(150):
        counts.count(Planned("unmapped", f"k{n}"))
    counts.count(Planned("unmapped", "k0"))
    assert counts.unmapped == 151
    assert len(counts.unmapped_keys) == 100
    assert counts.unmapped_keys["k0"] == 2


def test_a_checkpoint_survives_its_file() -> None:
    job = Job("old", "new", segments=12)
    counts = Counts(scanned=5, copied=4, conflicts=1, read_units=2.5, endpoints={"e#p": 4})
    moment = datetime.datetime(2026, 12, 4, 10, 0, tzinfo=datetime.timezone.utc)
    point = Checkpoint(job, 3, {"endpoint_id": {"S": "a"}, "sk": {"B": b"\x01"}}, False, counts)
    point = point.advanced(point.last_key, counts, updated=moment, by="host:1")
    assert point.file_name == "segment-03-of-12.json"
    again = Checkpoint.decode(point.encode(), job=job, segment=3, where="f")
    assert again == point


@pytest.mark.parametrize(
    ("raw", "job", "segment", "message"),
    [
        (b"{", Job("old", "new"), 0, "f: damaged checkpoint (not JSON"),
        (b'{"format": 2}', Job("old", "new"), 0, "f: not a checkpoint of format 1"),
        (None, Job("old", "other"), 0, "f belongs to another job"),
        (None, Job("old", "new", segments=2), 0, "f belongs to another job"),
        (None, Job("old", "new"), 1, "f belongs to another job"),
    ],
)
def test_a_damaged_or_foreign_checkpoint_is_refused(
    raw: bytes | None, job: Job, segment: int, message: str
) -> None:
    raw = raw or Checkpoint(Job("old", "new"), 0).encode()
    with pytest.raises(BackfillError) as caught:
        Checkpoint.decode(raw, job=job, segment=segment, where="f")
    assert message in str(caught.value)


def test_a_checkpoint_with_damaged_counts_is_refused() -> None:
    raw = Checkpoint(Job("old", "new"), 0).encode().replace(b'"copied": 0', b'"copied": -1')
    with pytest.raises(BackfillError, match="damaged counts: copied is -1"):
        Checkpoint.decode(raw, job=Job("old", "new"), segment=0, where="f")


# -- capacity ------------------------------------------------------------------------------------


def test_no_limit_never_waits() -> None:
    limiter = Limiter(None, 0.0)
    limiter.spend(1e9, 0.0)
    assert limiter.admit(0.0) == 0.0


@pytest.mark.parametrize("rate", [0, -1, float("nan"), float("inf")])
def test_a_limit_is_a_positive_number(rate: float) -> None:
    with pytest.raises(BackfillError, match="positive number"):
        Limiter(rate, 0.0)


def test_a_limit_admits_one_request_then_waits_for_what_it_spent() -> None:
    limiter = Limiter(10.0, 0.0)
    assert limiter.admit(0.0) == 0.0
    limiter.spend(25.0, 0.0)  # 25 units spent: 2.5 s of the rate
    assert limiter.admit(0.0) == pytest.approx(2.5)
    assert limiter.admit(2.5) == 0.0
    limiter.spend(1.0, 2.5)
    assert limiter.admit(2.5) == pytest.approx(0.1)


def test_requests_admitted_together_reserve_a_unit_each() -> None:
    limiter = Limiter(10.0, 0.0)
    limiter.admit(0.0)
    limiter.spend(1.0, 0.0)
    limiter.spend(0.0, 1.0)  # a second later: ten units in hand
    admitted = [limiter.admit(1.0) for _ in range(12)]
    assert admitted[:10] == [0.0] * 10 and admitted[10] == pytest.approx(0.1)


@pytest.mark.parametrize(("rate", "units"), [(50.0, 3.0), (5.0, 1.0), (1.0, 0.5), (200.0, 128.0)])
def test_a_limited_run_holds_its_rate_from_the_first_request(rate: float, units: float) -> None:
    # Requests of ``units`` sent as soon as the limiter admits them, for 100 s.
    limiter, now, spent = Limiter(rate, 0.0), 0.0, 0.0
    while now < 100.0:
        wait = limiter.admit(now)
        if wait:
            now += wait
            continue
        limiter.spend(units, now)
        spent += units
    assert spent / now == pytest.approx(rate, rel=0.02)


def test_an_idle_limiter_saves_at_most_one_second() -> None:
    limiter = Limiter(10.0, 0.0)
    assert limiter.admit(1000.0) == 0.0  # long idle: the balance is capped at 10 units
    limiter.spend(21.0, 1000.0)  # 10 in hand, 11 overspent, 1 to reserve
    assert limiter.admit(1000.0) == pytest.approx(1.2)


@pytest.mark.parametrize(
    ("attempt", "draw", "seconds"),
    [(0, 1.0, 0.05), (1, 1.0, 0.1), (3, 0.5, 0.2), (20, 1.0, 20.0), (99, 1.0, 20.0), (5, 0.0, 0)],
)
def test_backoff_is_jittered_and_capped(attempt: int, draw: float, seconds: float) -> None:
    assert backoff(attempt, draw) == pytest.approx(seconds)


# -- progress ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "elapsed", "expected", "worker", "line"),
    [
        (
            Counts(scanned=1000, copied=990, unmapped=10),
            10.0,
            4000,
            Worker(),
            "backfill old -> new: 1,000 scanned (100/s), 990 copied, 10 unmapped, about 30s left",
        ),
        (
            Counts(scanned=10, copied=8, conflicts=1, already=1, throttled=4),
            0.0,
            None,
            Worker(1, 2),
            "backfill old -> new (worker 1/2): 10 scanned (0/s), 8 copied, 1 already, "
            "1 conflicts, 4 throttled",
        ),
    ],
)
def test_the_progress_line(
    counts: Counts, elapsed: float, expected: int | None, worker: Worker, line: str
) -> None:
    job = Job("old", "new")
    assert progress_line(job, counts, elapsed=elapsed, expected=expected, worker=worker) == line


# -- verification ------------------------------------------------------------------------------


def test_endpoint_tallies_do_not_depend_on_order_and_merge() -> None:
    digests = [item_digest({"n": {"N": str(n)}}) for n in range(10)]
    forward, backward, halves = Tally(), Tally(), [Tally(), Tally()]
    for n, digest in enumerate(digests):
        forward.add(digest)
        halves[n % 2].add(digest)
    for digest in reversed(digests):
        backward.add(digest)
    halves[0].merge(halves[1])
    assert forward == backward == halves[0]
    assert Tally.from_json(forward.to_json()) == forward


def test_verification_finds_missing_and_different_items() -> None:
    found = Verified()
    same = {"partition_key": {"S": "e#p"}, "sk": {"S": "1"}, "n": {"N": "1"}}
    found.compare("e#p", "e#p/1", same, dict(same))
    found.compare("e#p", "e#p/2", {**same, "sk": {"S": "2"}}, None)
    found.compare("e#q", "e#q/3", {**same, "n": {"N": "3"}}, {**same, "n": {"N": "4"}, "x": {}})
    assert (found.missing, found.different, found.complete) == (1, 1, False)
    assert found.differences == ["e#p/2: missing", "e#q/3: different (n, x)"]
    endpoints = found.endpoints()
    assert endpoints["e#p"]["items"] == 2 and not endpoints["e#p"]["complete"]
    assert not endpoints["e#q"]["complete"]


def test_a_complete_verification_has_equal_digests_per_endpoint() -> None:
    found = Verified()
    for n in range(5):
        item = {"partition_key": {"S": "e#p"}, "sk": {"S": str(n)}}
        found.compare("e#p", f"e#p/{n}", item, dict(item))
    assert found.complete
    entry = found.endpoints()["e#p"]
    assert entry["complete"] and entry["source_digest"] == entry["target_digest"]


def _record(segment: int, hour: int, *, complete: bool = True, items: int = 10) -> Backfilled:
    return Backfilled(
        Job("old", "new", segments=2),
        datetime.datetime(2026, 12, 4, hour, tzinfo=datetime.timezone.utc),
        complete,
        items,
        0 if complete else 1,
        0,
        0,
        {"e#p": {"items": items, "complete": complete}},
        (segment,),
    )


def test_the_newest_record_of_each_segment_makes_the_tables_record() -> None:
    merged = merge_records([_record(0, 1, complete=False), _record(1, 2), _record(0, 3)])
    assert merged is not None
    assert merged.whole and merged.complete and merged.items == 20
    assert merged.endpoints == {"e#p": {"items": 20, "complete": True}}
    assert "complete" in merged.summary() and "INCOMPLETE" not in merged.summary()


def test_a_table_verified_again_with_other_segments_is_judged_on_the_newest() -> None:
    whole = Backfilled(
        Job("old", "new", segments=1),
        datetime.datetime(2026, 12, 4, 5, tzinfo=datetime.timezone.utc),
        True,
        20,
        0,
        0,
        0,
        {"e#p": {"items": 20, "complete": True}},
        (0,),
    )
    merged = merge_records([_record(0, 1, complete=False), _record(1, 2), whole])
    assert merged == whole
    older = merge_records([whole, _record(0, 6), _record(1, 7)])
    assert older is not None and older.job.segments == 2 and older.items == 20


def test_a_record_missing_a_segment_is_not_whole() -> None:
    merged = merge_records([_record(1, 2)])
    assert merged is not None and not merged.whole
    assert "INCOMPLETE (segments 1 of 2 verified)" in merged.summary()


def test_a_record_survives_its_file() -> None:
    record = _record(0, 1)
    assert Backfilled.from_json(record.to_json(), "f") == record
    with pytest.raises(BackfillError, match="f: not a backfill record"):
        Backfilled.from_json({**record.to_json(), "verified": "yesterday"}, "f")
