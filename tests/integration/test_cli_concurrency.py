"""ai-agent-rollout under concurrent operators and crashes: no lost change, no torn file."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ai_agent_handler.ops import cli, edits_io
from ai_agent_handler.ops import edits as fe
from ai_agent_handler.ops import store as flag_store
from tests.support import REPO
from tests.support.cli import Runner, audit_records, copy_phase_files


@pytest.fixture
def production(tmp_path: Path) -> Path:
    return copy_phase_files(tmp_path / "flags")["production"]


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, cli.ACTOR_ENV: "writer"},
    )


WRITER = """
    import sys
    from ai_agent_handler.ops import cli
    path, prefix = sys.argv[1], sys.argv[2]
    codes = [cli.main(["--file", path, "allow", f"{prefix}-{i:02d}", "--reason", prefix])
             for i in range(20)]
    sys.exit(max(codes))
"""


def test_two_processes_writing_at_once_lose_nothing(production: Path) -> None:
    start = fe.version_of(json.loads(production.read_text()))
    assert start is not None
    writers = [python(WRITER, str(production), prefix) for prefix in ("alice", "bob")]
    for writer in writers:
        _, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
    doc = json.loads(production.read_text())
    allowed = set(fe.read_state(doc).allowed)
    expected = {f"{p}-{i:02d}" for p in ("alice", "bob") for i in range(20)}
    assert allowed == expected
    assert fe.version_of(doc) == start + 40
    records = audit_records(production)
    assert len(records) == 40
    # Serialised read-modify-write: each change starts from the previous one's result.
    assert [r["version_before"] for r in records] == list(range(start, start + 40))
    assert [r["version_after"] for r in records] == list(range(start + 1, start + 41))
    assert {r["reason"] for r in records} == {"alice", "bob"}
    leftovers = list(production.parent.glob(".*.tmp"))
    assert leftovers == []


def test_threads_in_one_process_lose_nothing(production: Path) -> None:
    import threading

    errors: list[int] = []

    def writer(prefix: str) -> None:
        for i in range(10):
            code = cli.main(["--file", str(production), "--json", "allow", f"{prefix}-{i}"])
            if code:
                errors.append(code)

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("t1", "t2", "t3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(fe.read_state(json.loads(production.read_text())).allowed) == 30
    assert len(audit_records(production)) == 30


def test_failed_rename_leaves_the_old_file_and_no_temp_file(
    run: Runner, production: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = production.read_bytes()

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(flag_store.os, "replace", refuse)
    result = run("--file", str(production), "percent", "40")
    assert result.code == cli.EXIT_ERROR
    assert "No space left on device" in result.err
    assert production.read_bytes() == before
    assert list(production.parent.glob(".*.tmp")) == []
    assert audit_records(production) == []


CRASH_AT_RENAME = """
    import os, signal, sys
    from ai_agent_handler.ops import cli
    from ai_agent_handler.ops import store as flag_store

    def die(src, dst):
        # The temp file is complete and fsynced; the process dies before the rename.
        print(src, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    flag_store.os.replace = die
    cli.main(["--file", sys.argv[1], "percent", "40"])
"""


def test_killed_between_write_and_rename_leaves_the_old_file(run: Runner, production: Path) -> None:
    before = production.read_bytes()
    crashed = python(CRASH_AT_RENAME, str(production))
    out, err = crashed.communicate(timeout=60)
    assert crashed.returncode == -9, err
    temp = Path(out.strip())
    assert temp.parent == production.parent and temp.exists()  # the orphan of the dead writer
    assert fe.read_state(json.loads(temp.read_text())).percent == 40
    assert production.read_bytes() == before  # readers never saw a change
    assert audit_records(production) == []
    # The lock died with the process; the next write goes through and sweeps the orphan.
    result = run("--file", str(production), "--lock-timeout", "5", "percent", "10")
    assert result.code == 0, result.err
    assert not temp.exists()
    assert fe.read_state(json.loads(production.read_text())).percent == 10


def test_writers_through_a_symlink_and_its_target_share_one_lock(production: Path) -> None:
    """Half the operators use a link to the file, half the file itself: one lock, one log."""
    link = production.parent.parent / "live" / production.name
    link.parent.mkdir()
    link.symlink_to(production)
    start = fe.version_of(json.loads(production.read_text()))
    assert start is not None
    per_writer, paths = 5, [link, production] * 4
    writer = WRITER.replace("range(20)", f"range({per_writer})")
    prefixes = [f"w{n}" for n in range(len(paths))]
    writers = [python(writer, str(path), p) for path, p in zip(paths, prefixes, strict=True)]
    for process in writers:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    total = per_writer * len(paths)
    doc = json.loads(production.read_text())
    expected = {f"{p}-{i:02d}" for p in prefixes for i in range(per_writer)}
    assert set(fe.read_state(doc).allowed) == expected
    assert fe.version_of(doc) == start + total
    assert link.is_symlink()  # the link was kept, its target replaced
    assert not link.with_name(link.name + ".audit.jsonl").exists()
    assert not link.with_name(link.name + ".lock").exists()
    records = audit_records(production)  # every record in the one log beside the target
    assert [r["version_after"] for r in records] == list(range(start + 1, start + total + 1))
    assert {r["file"] for r in records} == {str(link), str(production)}
    assert list(production.parent.glob(".*.tmp")) == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())


@pytest.mark.parametrize(
    ("name", "hours_old", "removed"),
    [
        ("{host}.{dead}.abc123", 0, True),  # this host, its writer is gone
        ("{host}.{live}.abc123", 0, False),  # this host, its writer is still running
        ("{host}.{live}.abc123", 2, True),  # older than an hour: whoever wrote it is gone
        ("other-host.{dead}.abc123", 0, False),  # a pid of another host says nothing here
        ("other-host.{live}.abc123", 2, True),
        ("k3x9_q2a", 0, False),  # an older writer's name: judged by age alone
        ("k3x9_q2a", 2, True),
    ],
)
def test_only_dead_writers_temp_files_are_swept(
    production: Path, name: str, hours_old: int, removed: bool
) -> None:
    name = name.format(host=HOST, dead=_dead_pid(), live=os.getpid())
    leftover = production.parent / f".{production.name}.{name}.tmp"
    other_file = production.parent / f".{production.name}.bak.{HOST}.{_dead_pid()}.abc.tmp"
    for temp in (leftover, other_file):
        temp.write_bytes(b"{}")
        then = temp.stat().st_mtime - hours_old * 3600 - 1
        os.utime(temp, (then, then))
    store = flag_store.LocalFileStore(production, lock_timeout=1)
    edits_io.commit(store, lambda d: fe.allow(d, ["ep"]), command="allow ep", actor="a")
    assert leftover.exists() is not removed
    assert other_file.exists() is (hours_old == 0)  # another file's temp: by age alone
