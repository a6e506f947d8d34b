"""``--json``: one vocabulary for every command.

A file's row (``status``, ``validate``) has the same keys valid or not; a change (every edit,
``seed``) the same keys whatever it changed; ``explain`` its own; a failed command an error
object with its exit code. Versions are whole numbers, states one shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.cli import Runner

STATE_KEYS = {"kind", "description", "allowed", "percent", "canonical", "default_variant"}
FILE_KEYS = {
    "phase",
    "source",
    "origin",
    "valid",
    "version",
    "state",
    "error",
    "problems",
    "fallback",
}
#: ``status`` adds where the rollout stands: who named the live file, the ramp, the last change.
STATUS_KEYS = {"named_by", "ramp", "ramp_error", "last_change", "last_change_error"}
CHANGE_KEYS = {
    "command",
    "source",
    "phase",
    "origin",
    "changed",
    "before",
    "after",
    "version_before",
    "version_after",
    "audit",
    "notes",
    "restore",
}
EXPLAIN_KEYS = {
    "source",
    "phase",
    "origin",
    "endpoint_id",
    "part_id",
    "routing_key",
    "key_scheme",
    "flag_value",
    "variant",
    "reason",
    "error_code",
    "error_message",
    "version",
    "rule",
    "composite_from_percent",
    "state",
    "notes",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def test_every_command_speaks_one_json_vocabulary(
    run: Runner, files: dict[str, Path], tmp_path: Path
) -> None:
    path = str(files["production"])
    for command, keys in ((["status"], FILE_KEYS | STATUS_KEYS), (["validate"], FILE_KEYS)):
        body = run("--file", path, "--json", *command).json()
        assert set(body) == {"files"}, command
        (row,) = body["files"]
        assert set(row) == keys, command
        assert _is_int(row["version"]) and set(row["state"]) == STATE_KEYS, command
        assert row["origin"] == "file"
    broken = tmp_path / "broken.flagd.json"
    broken.write_text("{")
    (row,) = run("--file", str(broken), "--json", "validate").json()["files"]
    assert set(row) == FILE_KEYS and row["version"] is None and row["problems"]
    (row,) = run("--file", str(broken), "--json", "status").json()["files"]
    assert set(row) == FILE_KEYS | STATUS_KEYS and row["problems"]
    said = run("--file", path, "--json", "explain", "--endpoint", "ep", "--part-id", "p").json()
    assert set(said) == EXPLAIN_KEYS
    assert _is_int(said["version"]) and set(said["state"]) == STATE_KEYS
    for argv in (["allow", "ep"], ["percent", "5"], ["set", "legacy"], ["rollback"]):
        body = run("--file", path, "--json", *argv).json()
        assert set(body) == CHANGE_KEYS, argv
        assert _is_int(body["version_before"]) and _is_int(body["version_after"]), argv
        assert set(body["after"]) == STATE_KEYS
    seeded = tmp_path / "seeded.flagd.json"
    body = run("--file", str(seeded), "--json", "seed", "--from", path).json()
    assert set(body) == CHANGE_KEYS | {"from"}
    assert body["version_before"] is None and _is_int(body["version_after"])
    failed = run("--file", str(tmp_path / "nope.json"), "--json", "percent", "5")
    assert failed.json() == {"error": failed.err.split("error: ", 1)[1].strip(), "exit_code": 1}
