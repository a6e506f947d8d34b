"""A local flag file in a shared folder: symlinks in it, two OS users, an audit log that cannot
be written.

* The lock and the audit file are never opened through a symlink, and ``rollback`` never
  rewrites a file that is not a flag file through one; a symlink to a valid flag file still
  works for every command.
* The lock and audit files the CLI creates take the flag file's permission bits, group (and,
  for root, owner), so every operator who may change the flag file can keep changing it.
* A change whose audit record cannot be kept is not made: refused before the write when the
  audit file cannot be opened, undone when the append fails after it.

Tests that need a second OS user run as root and fork a child that becomes ``nobody``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_agent_handler.ops import cli
from ai_agent_handler.ops import edits as fe
from ai_agent_handler.ops.edits_io import commit
from ai_agent_handler.ops.store import LocalFileStore
from tests.support import FLAGS_DIR
from tests.support.cli import Runner, audit_records
from tests.support.flags import disk_full_for

SHIPPED = (FLAGS_DIR / "production.flagd.json").read_bytes()
NOBODY = 65534
ROOT = os.geteuid() == 0


def _as_nobody(work: Callable[[], Any]) -> Any:
    """``work()`` in a forked child that dropped root for user nobody; its JSON result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: everything is imported already, only the user changes
        outcome: dict[str, Any] = {"error": "no outcome"}
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome = {"result": work()}
        except BaseException as err:
            outcome = {"error": f"{type(err).__name__}: {err}"}
        finally:
            os.write(write_end, json.dumps(outcome).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        outcome = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert "result" in outcome, outcome["error"]
    return outcome["result"]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder under /tmp that user nobody can reach (pytest's tmp_path is root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="flag-shared-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


# -- symlinks --------------------------------------------------------------------------------


@pytest.mark.parametrize("victim_exists", [True, False], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("suffix", [".lock", ".audit.jsonl"])
def test_a_symlink_at_the_lock_or_audit_file_is_refused(
    run: Runner, tmp_path: Path, suffix: str, victim_exists: bool
) -> None:
    path = tmp_path / "production.flagd.json"
    path.write_bytes(SHIPPED)
    victim = tmp_path / "elsewhere" / "victim.conf"
    victim.parent.mkdir()
    if victim_exists:
        victim.write_bytes(b"precious = 1\n")
    planted = _beside(path, suffix)
    planted.symlink_to(victim)
    result = run("--file", str(path), "allow", "ep", "--reason", "CHG-1")
    code, err = result.code, result.err
    assert code == cli.EXIT_ERROR, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"refusing to follow a symlink at {planted}" in err
    assert path.read_bytes() == SHIPPED  # nothing written
    assert planted.is_symlink()
    if victim_exists:
        assert victim.read_bytes() == b"precious = 1\n"
    else:
        assert not victim.exists()


NOT_FLAG_FILES = {
    "other-config": b"[server]\nport = 80\n",
    "empty": b"",
    "json-array": b"[1, 2]\n",
    "missing": None,
}


@pytest.mark.parametrize("name", sorted(NOT_FLAG_FILES))
def test_rollback_never_rewrites_a_non_flag_file_through_a_symlink(
    run: Runner, tmp_path: Path, name: str
) -> None:
    content = NOT_FLAG_FILES[name]
    target = tmp_path / "etc" / "app.conf"
    target.parent.mkdir()
    if content is not None:
        target.write_bytes(content)
    link = tmp_path / "flags" / "production.flagd.json"
    link.parent.mkdir()
    link.symlink_to(target)
    result = run("--file", str(link), "rollback", "--create", "--reason", "INC-1")
    code, err = result.code, result.err
    assert code == cli.EXIT_ERROR, err
    assert len(err.strip().splitlines()) == 1, err
    assert str(link) in err and str(target) in err and f"--file {target}" in err
    assert (target.read_bytes() if target.exists() else None) == content
    assert link.is_symlink() and audit_records(target) == [] and audit_records(link) == []
    # What the message proposes works when the target really is meant to be the flag file.
    result = run("--file", str(target), "rollback", "--create")
    code, err = result.code, result.err
    assert code == cli.EXIT_OK, err
    assert fe.read_state(json.loads(target.read_bytes())).kind == "legacy-everywhere"


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["explain", "--endpoint", "ep-a", "--part-id", "p"],
        ["allow", "ep-b"],
        ["disallow", "ep-a"],
        ["percent", "20"],
        ["set", "composite"],
        ["rollback"],
    ],
    ids=lambda argv: argv[0],
)
def test_every_command_works_through_a_symlink_to_a_valid_flag_file(
    run: Runner, tmp_path: Path, argv: list[str]
) -> None:
    target = tmp_path / "flags" / "production.flagd.json"
    target.parent.mkdir()
    target.write_bytes(SHIPPED)
    assert run("--file", str(target), "allow", "ep-a").code == cli.EXIT_OK
    link = tmp_path / "live" / "production.flagd.json"
    link.parent.mkdir()
    link.symlink_to(target)
    before = target.read_bytes()
    result = run("--file", str(link), *argv)
    code, err = result.code, result.err
    assert code == cli.EXIT_OK, err
    validated = run("validate", str(link))
    assert (validated.code, validated.err) == (cli.EXIT_OK, "")
    assert link.is_symlink() and link.resolve() == target
    records = audit_records(target)
    if argv[0] in ("status", "explain"):
        assert target.read_bytes() == before and len(records) == 1
    else:
        assert fe.version_of(json.loads(target.read_bytes())) == 3
        assert [r["file"] for r in records] == [str(target), str(link)]
    assert not _beside(link, ".audit.jsonl").exists() and not _beside(link, ".lock").exists()


# -- two OS users ----------------------------------------------------------------------------


def _other_group() -> int | None:
    """A group this process may give its files other than its own, if any."""
    if ROOT:
        return NOBODY
    others = [g for g in os.getgroups() if g != os.getegid()]
    return others[0] if others else None


@pytest.mark.parametrize("mode", [0o664, 0o660, 0o644, 0o640, 0o600])
def test_lock_and_audit_files_take_the_flag_files_mode_and_group(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "production.flagd.json"
    path.write_bytes(SHIPPED)
    path.chmod(mode)
    group = _other_group()
    if group is not None:
        os.chown(path, -1, group)
    previous = os.umask(0o077)  # a strict umask must not lock the group out
    try:
        commit(
            LocalFileStore(path, lock_timeout=1),
            lambda d: fe.allow(d, ["ep"]),
            command="allow",
            actor="a",
        )
    finally:
        os.umask(previous)
    for created in (_beside(path, ".lock"), _beside(path, ".audit.jsonl"), path):
        info = created.stat()
        assert stat.S_IMODE(info.st_mode) == mode, created
        if group is not None:
            assert info.st_gid == group, created


@pytest.mark.skipif(not ROOT, reason="a second OS user needs root to become it")
@pytest.mark.parametrize(
    ("folder_owner", "file_owner", "mode"),
    [
        ((0, NOBODY), (0, NOBODY), 0o664),  # a group-writable file in a group folder
        ((NOBODY, NOBODY), (NOBODY, NOBODY), 0o644),  # root changes nobody's file
    ],
    ids=["same-group", "root-and-the-owner"],
)
def test_two_os_users_take_turns_on_one_flag_file(
    run: Runner, shared: Path, folder_owner: tuple[int, int], file_owner: tuple[int, int], mode: int
) -> None:
    folder = shared / "flags"
    folder.mkdir()
    os.chown(folder, *folder_owner)
    folder.chmod(0o775 if mode & 0o020 else 0o755)
    path = folder / "production.flagd.json"
    path.write_bytes(SHIPPED)
    os.chown(path, *file_owner)
    path.chmod(mode)

    def change(endpoint: str) -> list[Any]:
        result = run("--file", str(path), "allow", endpoint, "--reason", endpoint)
        return [result.code, result.err]

    assert change("ep-root-1") == [cli.EXIT_OK, ""]
    assert _as_nobody(lambda: change("ep-nobody")) == [cli.EXIT_OK, ""]
    assert change("ep-root-2") == [cli.EXIT_OK, ""]
    doc = json.loads(path.read_bytes())
    assert fe.read_state(doc).allowed == ("ep-root-1", "ep-nobody", "ep-root-2")
    assert [r["reason"] for r in audit_records(path)] == ["ep-root-1", "ep-nobody", "ep-root-2"]
    for created in (_beside(path, ".lock"), _beside(path, ".audit.jsonl"), path):
        info = created.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (mode, file_owner[1]), created
    # root's last write kept the owner the file had (nobody's, since nobody replaced it).
    assert path.stat().st_uid == NOBODY


# -- a change is audited or not made ---------------------------------------------------------


def _folder_for_an_operator(tmp_path: Path, shared: Path) -> Path:
    """Where an unprivileged operator can change a flag file (as nobody when we are root)."""
    if not ROOT:
        return tmp_path
    os.chown(shared, NOBODY, NOBODY)
    return shared


def _as_operator(work: Callable[[], Any]) -> Any:
    return _as_nobody(work) if ROOT else work()


def test_an_audit_file_the_operator_cannot_write_refuses_the_change(
    run: Runner, tmp_path: Path, shared: Path
) -> None:
    folder = _folder_for_an_operator(tmp_path, shared)
    path = folder / "production.flagd.json"
    path.write_bytes(SHIPPED)
    if ROOT:
        os.chown(path, NOBODY, NOBODY)
    audit = _beside(path, ".audit.jsonl")
    audit.write_bytes(b"")
    audit.chmod(0o444)  # root's, when root: nobody may read it only

    def allow() -> list[Any]:
        result = run("--file", str(path), "allow", "ep")
        return [result.code, result.err]

    code, err = _as_operator(allow)
    assert code == cli.EXIT_ERROR, err
    assert len(err.strip().splitlines()) == 1, err
    assert str(audit) in err and "Permission denied" in err and "nothing written" in err
    assert path.read_bytes() == SHIPPED
    assert audit.read_bytes() == b""


def test_an_audit_log_that_cannot_be_opened_refuses_the_change(run: Runner, tmp_path: Path) -> None:
    path = tmp_path / "production.flagd.json"
    path.write_bytes(SHIPPED)
    log = tmp_path / "audit"
    log.mkdir()  # a folder where the audit log should be
    result = run("--file", str(path), "--audit-log", str(log), "percent", "5")
    code, err = result.code, result.err
    assert code == cli.EXIT_ERROR, err
    assert len(err.strip().splitlines()) == 1, err
    assert str(log) in err and "nothing written" in err
    assert path.read_bytes() == SHIPPED


def test_a_failed_audit_append_after_the_write_undoes_the_change_cli(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "production.flagd.json"
    path.write_bytes(SHIPPED)
    log = _beside(path, ".audit.jsonl")
    disk_full_for(monkeypatch, log)
    result = run("--file", str(path), "allow", "ep", "--reason", "CHG-1")
    code, err = result.code, result.err
    assert code == cli.EXIT_ERROR, err
    assert len(err.strip().splitlines()) == 1, err
    assert "NOT made" in err and "No space left on device" in err
    assert path.read_bytes() == SHIPPED  # byte for byte
    assert log.read_bytes() == b""
