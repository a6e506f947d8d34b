"""``ai-agent-rollout``: steer the partition-key flag through the phase files.

Operators never hand-edit the JSON: every change is one command that validates the new
file, writes it atomically under a lock (a conditional put for ``s3://`` files), bumps
``metadata.version`` and appends an audit record. Running handlers pick the change up on
their next run. ``--help`` shows the commands with examples; ``rollout.md`` is the runbook.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..exceptions import (
    ConflictError,
    FlagConfigError,
    FlagEditError,
    FlagFileError,
    PartitionKeyError,
    StoreError,
)
from ..flag_file import default_provider
from ..flag_file.document import parse
from ..settings import PHASES
from . import edits
from .explain import explain
from .store import Change, Edit, FlagStore, Snapshot, commit, open_store

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

PROG = "ai-agent-rollout"
ACTOR_ENV = "AI_AGENT_ROLLOUT_ACTOR"

EXIT_OK = 0
#: Reading or writing failed (missing file, permission, AWS error); nothing was changed.
EXIT_ERROR = 1
#: The command line is wrong.
EXIT_USAGE = 2
#: The flag file is invalid, or the edit would make it invalid / cannot apply; nothing written.
EXIT_INVALID = 3
#: Someone else changed the file meanwhile (S3 ETag) or holds the lock; nothing written.
EXIT_CONFLICT = 4

EPILOG = f"""\
examples (a fleet reads its live file from S3: P=s3://ops-flags/ai-agent/production.flagd.json):
  {PROG} status                               state of the three shipped phase files
  {PROG} --file $P status                     what the production fleet is told
  {PROG} --file $P explain --endpoint aws-prod-us-east-1 --part-id acme-corp
  {PROG} --file $P allow aws-prod-eu-west-1 --reason "CHG-42 canary"
  {PROG} --file $P disallow aws-prod-eu-west-1 --reason "CHG-42 canary off"
  {PROG} --file $P percent 10 --reason "CHG-42 step 1"
  {PROG} --file $P set composite --reason "CHG-42 done"
  {PROG} --file $P rollback --reason "INC-7 receivers reject keys"
  {PROG} validate flags/*.flagd.json

rollback = legacy key for every endpoint, right away (running handlers: from their next run).
--phase NAME edits the file shipped with the code (released with it), not a fleet's live file.

exit codes: 0 ok; 1 read/write/AWS error; 2 bad command line; 3 invalid flag file or edit
refused; 4 someone else changed the file meanwhile (nothing written: run it again).
environment: {ACTOR_ENV} names you in the audit record (default: your OS user);
AWS_PROFILE / AWS_REGION etc. for s3:// files. Runbook: rollout.md.
"""


class _CliError(Exception):
    """An error reported as one line on stderr with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    # One line on stderr, not argparse's usage block: scripts and tired eyes read one line.
    def error(self, message: str) -> NoReturn:
        raise _CliError(f"{message} (see {self.prog} --help)", EXIT_USAGE)


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The global options work before and after the subcommand; after it they default to
    # SUPPRESS so they do not overwrite a value given before it.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--file",
        metavar="PATH|s3://BUCKET/KEY",
        default=default(None),
        help="the flag file to read or change (the live file of a fleet)",
    )
    where.add_argument(
        "--phase",
        choices=PHASES,
        default=default(None),
        help="the phase file shipped with the package (flags/<phase>.flagd.json)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable output"
    )
    parser.add_argument(
        "--reason",
        default=default(None),
        metavar="TEXT",
        help="why you make this change (kept in the audit record; ticket numbers welcome)",
    )
    parser.add_argument(
        "--audit-log",
        metavar="PATH",
        default=default(None),
        help="local JSON-lines audit file (default: <file>.audit.jsonl next to a local "
        "file, beside the target when the path is a symlink; objects under <key>.audit/ "
        "next to an s3:// file)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=_seconds,
        metavar="SECONDS",
        default=default(10.0),
        help="how long to wait for another operator's change to a local file (default 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and the tests)."""
    parser = _Parser(
        prog=PROG,
        description="Roll the composite partition key (endpoint_id#part_id) forward and back "
        "through the phase flag files. Every change is validated, atomic, locked, versioned "
        "and audited.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help_text.replace("%", "%%"),  # help strings are %-formatted, descriptions not
            description=help_text,
            parents=[common],
        )

    add("status", "who gets which key, per phase file (all shipped phases by default)")
    explain = add("explain", "the key one endpoint gets, and which rule decides it")
    explain.add_argument("--endpoint", required=True, metavar="ENDPOINT_ID")
    explain.add_argument("--part-id", metavar="PART_ID")
    set_cmd = add("set", "the same key for every endpoint: composite or legacy")
    set_cmd.add_argument("variant", choices=("composite", "legacy"))
    allow = add("allow", "composite key for these endpoints, whatever the percentage")
    allow.add_argument("endpoints", nargs="+", metavar="ENDPOINT_ID")
    allow.add_argument(
        "--remove", action="store_true", help="take them off the allow-list (same as disallow)"
    )
    disallow = add("disallow", "take endpoints off the allow-list (the percentage decides)")
    disallow.add_argument("endpoints", nargs="+", metavar="ENDPOINT_ID")
    percent = add("percent", "composite key for N % of the endpoints not allow-listed")
    percent.add_argument(
        "percent", type=_percent, metavar="N", help="0 to 100; raising it only adds endpoints"
    )
    back = add("rollback", "legacy key for every endpoint, immediately (repairs a broken file)")
    back.add_argument(
        "--create",
        action="store_true",
        help="write a legacy flag file when the file does not exist (a missing file is "
        "otherwise an error: a mistyped path must not look like a successful rollback)",
    )
    check = add("validate", "check flag files (default: the shipped phase files)")
    check.add_argument("files", nargs="*", metavar="FILE")
    return parser


def _seconds(text: str) -> float:
    # float() takes "nan" and "inf": a lock wait must end, and cannot be negative.
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def _percent(text: str) -> int:
    try:
        value = int(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be 0 to 100, got {value}")
    return value


# -- where files are ------------------------------------------------------------------------


def _shipped_flag_file(phase: str) -> Path:
    """The phase file shipped with the package (the deploy-time truth)."""
    try:
        return default_provider.shipped_flag_file(phase)
    except (FlagConfigError, FileNotFoundError) as err:
        raise _CliError(str(err), EXIT_ERROR) from err


def _sources(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    """``(phase, source)`` pairs the command applies to."""
    if args.file:
        return [(None, str(args.file))]
    if args.phase:
        return [(args.phase, str(_shipped_flag_file(args.phase)))]
    return [(phase, str(_shipped_flag_file(phase))) for phase in PHASES]


def _one_source(args: argparse.Namespace) -> tuple[str | None, str]:
    if not args.file and not args.phase:
        raise _CliError(
            f"{args.command} needs --file PATH|s3://BUCKET/KEY or --phase "
            f"{{{','.join(PHASES)}}} (see {PROG} --help)",
            EXIT_USAGE,
        )
    return _sources(args)[0]


def _store(args: argparse.Namespace, source: str) -> FlagStore:
    try:
        return open_store(source, audit_log=args.audit_log, lock_timeout=args.lock_timeout)
    except FlagConfigError as err:  # a malformed s3:// URI
        raise _CliError(str(err), EXIT_USAGE) from err


def _read_valid(store: FlagStore) -> tuple[Snapshot, dict[str, Any]]:
    try:
        snapshot = store.read()
    except StoreError as err:
        raise _CliError(str(err), EXIT_ERROR) from err
    if snapshot.data is None:
        raise _CliError(f"{store.source}: no such file", EXIT_ERROR)
    try:
        return snapshot, parse(snapshot.data, source=store.source)
    except FlagFileError as err:
        raise _CliError(str(err), EXIT_INVALID) from err


# -- read-only commands ---------------------------------------------------------------------


def _status(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    rows: list[dict[str, Any]] = []
    code = EXIT_OK
    for phase, source in _sources(args):
        row: dict[str, Any] = {"phase": phase, "source": source}
        try:
            _, doc = _read_valid(_store(args, source))
        except _CliError as err:
            code = max(code, err.code)
            row.update(valid=False, error=str(err), state=None, version=None)
        else:
            row.update(
                phase=phase or edits.phase_of(doc, source),
                valid=True,
                error=None,
                state=edits.read_state(doc).to_json(),
                version=edits.version_of(doc),
            )
        rows.append(row)
    _summary_on_stderr([row["error"] for row in rows if row["error"]], len(rows))
    if args.json:
        out(json.dumps({"files": rows}, indent=2))
        return code
    width = max(len(str(row["phase"])) for row in rows)
    for row in rows:
        label = str(row["phase"] or "?").ljust(width)
        if row["valid"]:
            out(f"{label}  {row['state']['description']}")
            out(f"{' ' * width}  version {row['version']}, {row['source']}")
        else:
            out(f"{label}  UNREADABLE OR INVALID: {row['error']}")
    return code


def _summary_on_stderr(errors: list[str], total: int) -> None:
    # The per-file lines go to stdout; the one-line reason for the exit code to stderr.
    if errors:
        first = " ".join(errors[0].split())
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        print(
            f"{PROG}: error: {len(errors)} of {total} flag file(s) unusable: "
            f"{_printable(first)}{more}",
            file=sys.stderr,
            flush=True,
        )


def _validate(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    pairs = [(None, f) for f in args.files] if args.files else _sources(args)
    results: list[dict[str, Any]] = []
    code = EXIT_OK
    for _, source in pairs:
        result: dict[str, Any] = {"source": source, "valid": False, "problems": []}
        try:
            snapshot = _store(args, source).read()
            if snapshot.data is None:
                raise _CliError(f"{source}: no such file", EXIT_ERROR)
            doc = parse(snapshot.data, source=source)
        except FlagFileError as err:
            code = max(code, EXIT_INVALID)
            result["problems"] = err.problems
            result["error"] = str(err)
        except (_CliError, StoreError) as err:
            code = max(code, getattr(err, "code", EXIT_ERROR))
            result["error"] = str(err)
        else:
            result.update(
                valid=True,
                version=edits.version_of(doc),
                state=edits.read_state(doc).describe(),
            )
        results.append(result)
    _summary_on_stderr([r["error"] for r in results if not r["valid"]], len(results))
    if args.json:
        out(json.dumps({"files": results}, indent=2))
    else:
        for result in results:
            if result["valid"]:
                out(f"ok       {result['source']} (version {result['version']}): {result['state']}")
            else:
                out(f"INVALID  {result['error']}")
                for problem in result["problems"][1:]:
                    out(f"         also: {problem}")
    return code


def _explain(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    phase, source = _one_source(args)
    store = _store(args, source)
    _, doc = _read_valid(store)
    phase = phase or edits.phase_of(doc, source)
    try:
        result = explain(source, doc, args.endpoint, args.part_id, phase)
    except PartitionKeyError as err:
        raise _CliError(str(err), EXIT_USAGE) from err
    if args.json:
        out(json.dumps(result, indent=2))
        return EXIT_OK
    part = f", part_id {result['part_id']}" if result["part_id"] else ""
    out(f"endpoint {result['endpoint_id']}{part}, phase {phase or '?'}, {source}:")
    scheme = f"{result['key_scheme']} key"
    if not result["part_id"]:
        scheme = "no part_id: endpoint_id is the key whatever the flag says"
    out(f"  key      {result['routing_key']}  ({scheme})")
    out(f"  variant  {result['variant']}  (reason {result['reason']})")
    out(f"  rule     {result['rule']}")
    if result.get("error_code"):
        out(f"  error    {result['error_code']}: {result.get('error_message') or ''}")
    out(f"  file     version {result['flag_set_version']}")
    return EXIT_OK


# -- changes ----------------------------------------------------------------------------------


def _actor() -> str:
    actor = os.environ.get(ACTOR_ENV)
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return f"uid:{os.getuid()}"


def _change(args: argparse.Namespace, out: Callable[[str], None], label: str, edit: Edit) -> int:
    phase, source = _one_source(args)
    store = _store(args, source)
    rollback = args.command == "rollback"
    try:
        change = commit(
            store,
            edit,
            command=label,
            actor=_actor(),
            reason=args.reason,
            phase=phase,
            repair=rollback,
            create=rollback and bool(getattr(args, "create", False)),
        )
    except ConflictError as err:
        raise _CliError(str(err), EXIT_CONFLICT) from err
    except StoreError as err:
        raise _CliError(str(err), EXIT_ERROR) from err
    except (FlagFileError, FlagEditError) as err:
        raise _CliError(str(err), EXIT_INVALID) from err
    where = f"--file {source}" if args.file else f"--phase {change.phase}"
    restore_lines = [f"{PROG} {where} {command}" for command in change.restore]
    if args.json:
        out(json.dumps({**change.to_json(), "restore": restore_lines}, indent=2))
        return EXIT_OK
    _print_change(change, restore_lines, out)
    return EXIT_OK


def _print_change(change: Change, restore_lines: list[str], out: Callable[[str], None]) -> None:
    name = change.phase or change.source
    if not change.changed:
        already = change.after.describe()
        out(f"{name}: unchanged, already {already} (version {change.version_before})")
        return
    out(f"{name}: {change.after.describe()}")
    out(f"  was: {change.before.describe() if change.before else 'unreadable'}")
    out(
        f"  version {change.version_before} -> {change.version_after}, written to "
        f"{change.source}; audit {change.audit}"
    )
    for note in change.notes:
        out(f"  note: {note}")
    if restore_lines:
        out("  to restore the previous rollout: " + " && ".join(restore_lines))
    out("  running handlers use it from their next run")


# -- entry point ------------------------------------------------------------------------------


def _run(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    command = args.command
    if command == "status":
        return _status(args, out)
    if command == "validate":
        return _validate(args, out)
    if command == "explain":
        return _explain(args, out)
    if command == "set":
        variant = args.variant
        return _change(args, out, f"set {variant}", lambda d: edits.set_everywhere(d, variant))
    if command in ("allow", "disallow"):
        endpoints = list(args.endpoints)
        if command == "disallow" or args.remove:
            label = "disallow " + " ".join(endpoints)
            return _change(args, out, label, lambda d: edits.disallow(d, endpoints))
        label = "allow " + " ".join(endpoints)
        return _change(args, out, label, lambda d: edits.allow(d, endpoints))
    if command == "percent":
        percent = args.percent
        return _change(args, out, f"percent {percent}", lambda d: edits.set_percent(d, percent))
    if command == "rollback":
        return _change(args, out, "rollback", edits.rollback)
    raise _CliError(f"unknown command {command!r}", EXIT_USAGE)  # argparse refuses it first


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        # --json output is JSON (ASCII, every control character escaped); the human lines
        # carry ids and paths from files and command lines: escaped for the terminal.
        return _run(args, lambda line: print(line if args.json else _printable(line), flush=True))
    except _CliError as err:
        return _fail(str(err), err.code, want_json)
    except FlagEditError as err:
        return _fail(str(err), EXIT_INVALID, want_json)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_ERROR, want_json)
    except SystemExit as exc:  # --help and argparse's own exits
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def _printable(text: str) -> str:
    """``text`` safe to show on a terminal: every non-printable character (C0 and C1
    controls such as ESC, line and paragraph separators, bidi and other format characters)
    written as an escape the way ``repr`` does (``\\x1b``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _fail(message: str, code: int, want_json: bool) -> int:
    one_line = " ".join(message.split())
    print(f"{PROG}: error: {_printable(one_line)}", file=sys.stderr, flush=True)
    if want_json:
        print(json.dumps({"error": one_line, "exit_code": code}), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
