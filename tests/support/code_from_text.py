"""The package run on text shaped like code, in a process of its own, under an audit hook.

``python -m tests.support.code_from_text FOLDER`` writes flag files under ``FOLDER`` whose
content is code in every shape a parser might run (Python in a rule, in a variant, as the
targeting, a YAML tag, a pickle, a marshalled code object), then hands them and code-shaped
ids, paths and settings to what reads outside text: ``document.parse`` and ``validate``, the
flag provider and ``decide``, the CLI (``status``, ``validate``, ``explain``, ``allow``,
``rollback``, ``seed``), the settings, a receiver's routing key, a model's streamed output.
Every payload, if run, creates ``FOLDER/sentinel``.

An audit hook (:func:`sys.addaudithook`) records each request to compile, exec, unpickle,
unmarshal or import. The scenario runs twice: the first run loads every module it needs, the
second is recorded. Then a deliberate ``eval`` and ``pickle.loads`` are recorded as a control.
One JSON object is printed: ``recorded`` (events of the second run: name, argument, the
innermost frame of the package on the stack), ``control`` (the control's event names),
``calls`` (how many calls the scenario made) and ``sentinel`` (whether a payload ran).
"""

from __future__ import annotations

import contextlib
import io
import json
import marshal
import os
import pathlib
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openfeature import api

import ai_agent_handler
from ai_agent_handler import (
    FLAG_DOMAIN,
    FLAG_KEY,
    FlagFileProvider,
    _chunking,
    decision,
    receiver,
    settings,
)
from ai_agent_handler.flag_file import document
from ai_agent_handler.ops import cli

#: The audit events of turning text or bytes into code or objects.
WATCHED = frozenset(
    {"compile", "exec", "marshal.load", "marshal.loads", "pickle.find_class", "import"}
)
PACKAGE = str(Path(ai_agent_handler.__file__).resolve().parent) + os.sep


class Recorder:
    """The audit hook: while ``on``, keeps every watched event and where the package was."""

    def __init__(self) -> None:
        self.on = False
        self.events: list[dict[str, str]] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.on or event not in WATCHED:
            return
        self.events.append({"event": event, "argument": repr(args[:1])[:200], "in": _where()})


def _where() -> str:
    """The innermost frame of the package on the current stack (``file:line``), if any."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(PACKAGE):
            return f"{frame.f_code.co_filename[len(PACKAGE) :]}:{frame.f_lineno}"
        frame = frame.f_back
    return "outside the package"


class _Touch:
    """Pickled, creates the sentinel when unpickled."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.sentinel),))


def _flag_file(targeting: Any, *, variants: Any = None) -> bytes:
    flag: dict[str, Any] = {
        "state": "ENABLED",
        "variants": variants or {"composite": True, "legacy": False},
        "defaultVariant": "legacy",
    }
    if targeting is not None:
        flag["targeting"] = targeting
    doc = {"metadata": {"phase": "production", "version": 1}, "flags": {FLAG_KEY: flag}}
    return json.dumps(doc).encode()


def contents(payload: str, sentinel: Path) -> dict[str, bytes]:
    """Flag files holding ``payload`` in every shape, by name."""
    return {
        "compared": _flag_file({"if": [{"==": [{"var": "endpoint_id"}, payload]}, "composite"]}),
        "unknown-operator": _flag_file({"exec": [payload]}),
        "eval-operator": _flag_file({"eval": payload}),
        "code-as-variant-value": _flag_file(None, variants={"composite": payload, "legacy": False}),
        "code-as-targeting-string": _flag_file(payload),
        "code-in-metadata": json.dumps({"metadata": {"version": payload}, "flags": {}}).encode(),
        "yaml-tag": f"!!python/object/apply:exec [{payload!r}]".encode(),
        "pickle": pickle.dumps(_Touch(sentinel), protocol=4),
        "marshal": marshal.dumps(compile(payload, "<payload>", "exec")),
    }


def scenario(folder: Path, files: dict[str, bytes], payload: str) -> int:
    """Hand every flag file and code-shaped argument to the package; how many calls it made."""
    calls = 0

    def call(work: Callable[[], Any]) -> None:
        nonlocal calls
        calls += 1
        with contextlib.suppress(Exception):
            work()

    for n, (name, data) in enumerate(sorted(files.items())):
        _read_flag_file(call, folder / f"{name}.flagd.json", data, payload, f"run-{n}")
    target = folder / "seeded" / "production.flagd.json"
    target.parent.mkdir(exist_ok=True)
    for argv in (
        ["--file", payload, "status"],
        ["--phase", payload, "status"],
        ["--file", str(target), "percent", payload],
        ["--file", str(target), "seed", "--from", payload],
        ["--file", str(target), "seed", "--from", str(folder / "pickle.flagd.json")],
        ["--file", f"s3://{payload}/{payload}", "status"],
    ):
        call(lambda argv=argv: cli.main(argv))
    for key in ("flag_source", "rollout_phase", "partition_key_mode", "flag_min_interval"):
        call(lambda key=key: settings.flag_config({key: payload}))
    call(lambda: settings.flag_config({}))
    call(lambda: receiver.split_key(f"{payload}#{payload}", "composite"))
    call(lambda: receiver.split_key(payload))
    call(lambda: _chunking.try_complete_json('{"arguments": "' + payload + '"'))
    call(lambda: _chunking.split_xml(f"<tool_call>{payload}</tool_call>"))
    return calls


def _read_flag_file(
    call: Callable[[Callable[[], Any]], None], path: Path, data: bytes, payload: str, run: str
) -> None:
    """``data`` as a flag file at ``path``, through the parser, the provider and the CLI."""
    path.write_bytes(data)
    call(lambda: document.validate(document.parse(data, source=str(path))))
    call(lambda: document.parse(data.decode("utf-8", "replace"), strict=False))
    provider = FlagFileProvider(path, min_interval=0)
    call(lambda: api.set_provider_and_wait(provider, domain=FLAG_DOMAIN))
    call(lambda: decision.decide(payload, "p", run_uuid=run))
    call(lambda: decision.decide("ep", payload, run_uuid=f"{run}-part"))
    api.clear_providers()
    for argv in (
        ["status"],
        ["--json", "status"],
        ["validate"],
        ["explain", "--endpoint", payload, "--part-id", payload],
        ["allow", payload, "--reason", payload],
        ["rollback", "--reason", payload],
    ):
        call(lambda argv=argv: cli.main(["--file", str(path), *argv]))
    call(lambda: cli.main(["validate", str(path)]))


def main() -> None:
    folder = Path(sys.argv[1])
    sentinel = folder / "sentinel"
    payload = f"__import__('pathlib').Path({str(sentinel)!r}).touch()"
    files = contents(payload, sentinel)
    recorder = Recorder()
    sys.addaudithook(recorder)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        scenario(folder, files, payload)  # loads what the scenario needs
        recorder.on = True
        calls = scenario(folder, files, payload)
        recorder.on = False
        recorded = list(recorder.events)
        recorder.events.clear()
        recorder.on = True
        eval("1 + 1")  # the control: the hook sees what the package must never do
        pickle.loads(pickle.dumps(Path("x"), protocol=4))
        recorder.on = False
    control = sorted({event["event"] for event in recorder.events})
    report = {
        "recorded": recorded,
        "control": control,
        "calls": calls,
        "sentinel": sentinel.exists(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
