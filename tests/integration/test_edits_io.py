"""ops.edits_io.commit: one locked, validated, versioned, audited write, on a file and on S3."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler import FLAG_KEY
from ai_agent_handler.exceptions import (
    ConflictError,
    FlagConfigError,
    FlagEditError,
    FlagFileError,
    StoreError,
)
from ai_agent_handler.ops import edits
from ai_agent_handler.ops.edits_io import Change, commit
from ai_agent_handler.ops.store import LocalFileStore, S3Store, Snapshot, open_store
from tests.support import BUCKET, FLAGS_DIR
from tests.support.live import PROD_KEY, LiveFile, local_file, s3_object

SHIPPED = (FLAGS_DIR / "production.flagd.json").read_bytes()
KEY = PROD_KEY
#: Makes the production flag file hold the bytes given (None: no file), and gives it.
Place = Callable[[bytes | None], LiveFile]


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    """The production flag file holding the bytes given (None: none), local or on S3."""
    if request.param == "local":
        return lambda data: local_file(tmp_path, data)
    client = request.getfixturevalue("s3")
    return lambda data: s3_object(client, data)


def _allow(*endpoints: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda doc: edits.allow(doc, endpoints)


def test_a_change_is_written_versioned_and_audited(
    place: Place,
) -> None:
    where = place(SHIPPED)
    change = commit(
        where.store, _allow("ep-canary"), command="allow ep-canary", actor="alice", reason="CHG-1"
    )
    assert isinstance(change, Change) and change.changed
    assert (change.version_before, change.version_after) == (1, 2)
    assert change.phase == "production"
    assert change.before is not None and change.before.kind == "legacy-everywhere"
    assert change.after.kind == "allow-list" and change.after.allowed == ("ep-canary",)
    assert change.audit == where.store.audit_location
    written = where.doc()
    assert edits.read_state(written) == change.after and edits.version_of(written) == 2
    (record,) = where.audit()
    assert {k: record[k] for k in ("actor", "command", "phase", "reason", "file")} == {
        "actor": "alice",
        "command": "allow ep-canary",
        "phase": "production",
        "reason": "CHG-1",
        "file": where.store.source,
    }
    assert (record["version_before"], record["version_after"]) == (1, 2)
    assert (
        record["before"]["kind"] == "legacy-everywhere" and record["after"]["kind"] == "allow-list"
    )
    assert change.after.to_json() == record["after"]


def test_an_edit_that_changes_nothing_writes_nothing(
    place: Place,
) -> None:
    where = place(SHIPPED)
    change = commit(where.store, edits.rollback, command="rollback", actor="a", repair=True)
    assert not change.changed and change.audit is None and change.restore == ()
    assert change.version_before == change.version_after == 1
    assert where.read() == SHIPPED and where.audit() == []


def test_a_rollback_says_how_to_restore(place: Place) -> None:
    where = place(SHIPPED)
    commit(where.store, _allow("ep-a"), command="allow", actor="a")
    commit(where.store, lambda d: edits.set_percent(d, 25), command="percent 25", actor="a")
    change = commit(where.store, edits.rollback, command="rollback", actor="a", repair=True)
    assert change.after.kind == "legacy-everywhere" and change.version_after == 4
    assert change.restore == (("allow", "ep-a"), ("percent", "25"))


BROKEN = [b"{not json", b"[]", json.dumps({"flags": {}}).encode(), b"\xff\xfe"]


@pytest.mark.parametrize("data", BROKEN, ids=["garbage", "array", "no-flag", "not-utf8"])
def test_an_invalid_file_is_refused_and_left_alone(place: Place, data: bytes) -> None:
    where = place(data)
    with pytest.raises(FlagFileError, match="run `rollback`"):
        commit(where.store, _allow("ep"), command="allow ep", actor="a")
    assert where.read() == data and where.audit() == []


@pytest.mark.parametrize("data", BROKEN, ids=["garbage", "array", "no-flag", "not-utf8"])
def test_a_rollback_repairs_an_invalid_file(place: Place, data: bytes) -> None:
    where = place(data)
    change = commit(where.store, edits.rollback, command="rollback", actor="a", repair=True)
    assert change.changed and change.before is None and change.after.kind == "legacy-everywhere"
    assert change.notes and "was invalid" in change.notes[0]
    assert edits.read_state(where.doc()).kind == "legacy-everywhere"
    assert len(where.audit()) == 1


def test_a_missing_file_is_an_error_unless_created(
    place: Place,
) -> None:
    where = place(None)
    with pytest.raises(StoreError, match="no such file"):
        commit(where.store, _allow("ep"), command="allow ep", actor="a")
    with pytest.raises(StoreError, match="no such file") as refused:
        commit(where.store, edits.rollback, command="rollback", actor="a", repair=True)
    assert refused.value.options == {"create": ""}  # the argument that lets it through
    assert where.read() is None
    change = commit(
        where.store, edits.rollback, command="rollback", actor="a", repair=True, create=True
    )
    assert change.changed and change.phase == "production"  # from the file name
    assert "did not exist" in change.notes[0]
    assert where.doc()["metadata"]["phase"] == "production"


def test_an_edit_that_cannot_apply_names_the_file(
    place: Place,
) -> None:
    doc = json.loads(SHIPPED)
    doc["flags"][FLAG_KEY]["state"] = "DISABLED"
    data = json.dumps(doc).encode()
    where = place(data)
    with pytest.raises(FlagEditError, match=r"DISABLED") as caught:
        commit(where.store, _allow("ep"), command="allow ep", actor="a")
    assert str(caught.value).startswith(where.store.source)
    assert where.read() == data


def test_an_edit_whose_result_is_invalid_is_not_written(
    place: Place,
) -> None:
    where = place(SHIPPED)

    def breaks_it(doc: dict[str, Any]) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))
        doc["flags"][FLAG_KEY]["defaultVariant"] = "maybe"
        return doc

    with pytest.raises(FlagFileError, match="refusing to write an invalid file"):
        commit(where.store, breaks_it, command="custom", actor="a")
    assert where.read() == SHIPPED and where.audit() == []


def test_an_audit_log_that_cannot_be_opened_refuses_the_change(
    place: Place, tmp_path: Path
) -> None:
    where = place(SHIPPED)
    (tmp_path / "audit").mkdir()  # a directory where the audit log should be
    client = where.store.client if isinstance(where.store, S3Store) else None
    store = open_store(
        where.store.source, s3_client=client, audit_log=str(tmp_path / "audit"), lock_timeout=1
    )
    with pytest.raises(StoreError, match=r"cannot open the audit log .*; nothing written"):
        commit(store, _allow("ep"), command="allow ep", actor="a")
    assert where.read() == SHIPPED


@pytest.mark.parametrize("data", [SHIPPED, None], ids=["changed", "created"])
def test_a_change_whose_audit_record_fails_is_undone(
    place: Place, monkeypatch: pytest.MonkeyPatch, data: bytes | None
) -> None:
    where = place(data)
    where.fail_audit(monkeypatch)
    edit = _allow("ep") if data else edits.rollback
    with pytest.raises(StoreError, match=r"the change was NOT made") as caught:
        commit(where.store, edit, command="c", actor="a", repair=True, create=True)
    assert "\n" not in str(caught.value)
    assert where.read() == data  # byte for byte, or gone again
    assert where.audit() == []


def test_a_change_that_cannot_be_undone_either_says_it_is_written_unaudited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = local_file(tmp_path, SHIPPED)
    where.fail_audit(monkeypatch)
    real_replace = os.replace
    replaced: list[str] = []

    def replace_once(src: str, dst: str) -> None:
        replaced.append(dst)
        if len(replaced) > 1:  # the write goes through, putting the old bytes back does not
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_once)
    with pytest.raises(StoreError, match=r"the change IS written \(version 2\) but NOT audited"):
        commit(where.store, _allow("ep"), command="allow ep", actor="a")
    assert edits.version_of(where.doc()) == 2
    assert list(tmp_path.glob(".*.tmp")) == []


def test_someone_elses_write_in_between_is_a_conflict_on_s3(s3: Any) -> None:
    where = s3_object(s3, SHIPPED)
    real_read = where.store.read

    def read_then_theirs() -> Snapshot:
        snapshot = real_read()
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=SHIPPED + b"\n")
        return snapshot

    where.store.read = read_then_theirs  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="changed by someone else"):
        commit(where.store, _allow("ep"), command="allow ep", actor="a")
    assert where.read() == SHIPPED + b"\n" and where.audit() == []


def test_a_held_lock_is_a_conflict_on_a_local_file(tmp_path: Path) -> None:
    where = local_file(tmp_path, SHIPPED)
    other = LocalFileStore(where.store.source, lock_timeout=0.1)
    with where.store.locked(), pytest.raises(ConflictError, match="another operator"):
        commit(other, _allow("ep"), command="allow ep", actor="b")
    assert where.read() == SHIPPED


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("s3://b/k.json", S3Store),
        ("/tmp/x/production.flagd.json", LocalFileStore),
        ("rel.json", LocalFileStore),
    ],
)
def test_open_store(source: str, kind: type) -> None:
    assert isinstance(open_store(source), kind)


@pytest.mark.parametrize("source", ["s3://", "s3://bucket", "s3://bucket/"])
def test_a_malformed_s3_uri_is_a_configuration_error(source: str) -> None:
    with pytest.raises(FlagConfigError):
        open_store(source)
