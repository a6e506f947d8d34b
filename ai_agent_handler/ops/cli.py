"""``ai-agent-rollout``: steer the partition-key flag through the phase files.

Operators never hand-edit the JSON: every change is one command that validates the new
file, writes it atomically under a lock (a conditional put for ``s3://`` files), raises
``metadata.version`` above every version the file has had and appends an audit record; a
command that changes nothing writes nothing. Running handlers pick the change up on their
next run. ``--help`` shows the commands with examples; ``rollout.md`` is the runbook, and its
section 1 the table of exit codes.

Every value of the command line is checked before any file is read (exit 2). ``--phase``
names ``flags/<phase>.flagd.json`` of the repository checkout the current folder is in (a
folder holding ``flags/`` and ``ai_agent_handler/``); outside a checkout it names the copy
installed with the package, which is read, never written. Errors end the command through
one table (:data:`._cli_base.EXIT_CODES`), their ``options`` named as this command's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from .. import _aws
from ..exceptions import (
    FlagConfigError,
    PartitionKeyError,
    StoreError,
)
from ..flag_file import default_provider
from ..flag_file.document import parse
from ..partition_key import validate_id
from ..settings import PHASES, check_phase
from . import (
    cli_backfill,
    cli_history,
    cli_ramp,
    cli_report,
    cli_retire,
    config_io,
    edits,
    times,
)
from ._cli_base import (
    ACTOR_ENV,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CliError,
    actor,
    argument_type,
    exit_code,
    location,
    printable,
    with_options,
)
from ._cli_base import EXIT_CONFLICT as EXIT_CONFLICT  # the exit codes, all in one place
from ._cli_base import EXIT_INVALID as EXIT_INVALID
from ._cli_base import EXIT_NOT_DONE as EXIT_NOT_DONE
from ._cli_base import EXIT_TIMEOUT as EXIT_TIMEOUT
from .config import Live, env_name
from .edits_io import Change, Edit, commit, seed
from .explain import explain
from .status import FileStatus
from .status_io import read_status
from .store import FlagStore, open_store

#: The subcommands, and those that write.
COMMANDS = (
    "status",
    "history",
    "explain",
    "set",
    "allow",
    "disallow",
    "percent",
    "rollback",
    "seed",
    "validate",
    "ramp",
    "retire-check",
    "report",
    "backfill",
)
WRITES = frozenset({"set", "allow", "disallow", "percent", "rollback", "seed"})

INSTALLED_NOTE = "shipped with the installed package, read-only"

EPILOG = f"""\
examples (a fleet reads its live file from S3: P=s3://ops-flags/ai-agent/production.flagd.json):
  {PROG} status                               where each phase stands: rule, ramp, last change
  {PROG} history --since 7d                   who changed what, when and why, newest first
  {PROG} report --html rollout.html           one HTML page of the rollout for approvers
  {PROG} --file $P seed --from production     create the live file once (re-running is harmless)
  {PROG} --file $P status                     what the production fleet is told
  {PROG} --file $P explain --endpoint aws-prod-us-east-1 --part-id acme-corp
  {PROG} --file $P allow aws-prod-eu-west-1 --reason "CHG-42 canary"
  {PROG} --file $P disallow aws-prod-eu-west-1 --reason "CHG-42 canary off"
  {PROG} --file $P percent 10 --reason "CHG-42 step 1"
  {PROG} --file $P set composite --reason "CHG-42 done"
  {PROG} --file $P rollback --reason "INC-7 receivers reject keys"
  {PROG} validate flags/*.flagd.json
  {PROG} --file $P ramp start --steps 1,5,25,50,100 --bake 1d --alarm NAME   (ramp --help)
  {PROG} --file $P backfill --source-table T --map parts.csv   (backfill --help)

status, history, report, ramp status and retire-check read the phases' live files named in
ai-agent-rollout.toml ([live] production = "s3://...", in this folder or one above) or in
ROLLOUT_LIVE_<PHASE>; else the phase files. Changes name their file: --file, or
AI_AGENT_ROLLOUT_FILE=PATH, which stands in for --file in any command that names no file
(no --file, --phase or PHASE).
rollback = legacy key for every endpoint, right away (running handlers: from their next run).
--phase NAME is the repository's flags/NAME.flagd.json when run inside a checkout (it ships
with the next release, not to a running fleet); elsewhere it is the copy installed with the
package, which status, explain and validate read and nothing writes.
A command that would change nothing writes nothing (no version, no audit record, no lock).
ROLLOUT_REQUIRE_REASON=1 in the environment: every change is refused without --reason.

exit codes: 0 done or nothing to do; 1 read/write/AWS error; 2 bad command line; 3 invalid
flag file or edit refused; 4 someone else changed the file or holds the lock; 5 the answer
is no (the ramp ended paused or aborted; retire-check: not yet); 6 the ramp was still
running at --timeout. Nothing is written on any error. What each means and what to do:
rollout.md, section 1, "Exit codes".
environment: {ACTOR_ENV} names you in the audit record (default: your OS user);
AWS_PROFILE / AWS_REGION etc. for s3:// files. Runbook: rollout.md.
"""


class _Parser(argparse.ArgumentParser):
    # One line on stderr, not argparse's usage block: scripts and tired eyes read one line.
    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)", EXIT_USAGE)


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
        help="the phase file flags/<phase>.flagd.json of the repository checkout you are in "
        "(outside a checkout: the copy installed with the package, read-only)",
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

    status = add(
        "status",
        "where the rollout stands, per phase: the rule, version, ramp, last change (every "
        "phase by default: its named live file, else its phase file)",
    )
    status.add_argument("phases", nargs="*", metavar="PHASE", help="only these phases")
    cli_history.add_parser(commands, common)
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
    disallow = add(
        "disallow",
        "take endpoints off the allow-list (the percentage decides); an endpoint that is not "
        "listed is an error",
    )
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
    seed_cmd = add(
        "seed",
        "create the --file (a fleet's live file) from a phase file, once: when it exists "
        'already nothing is written ("already seeded", exit 0), so running it again is '
        "harmless; its version continues the file's audited versions",
    )
    seed_cmd.add_argument(
        "--from",
        dest="seed_from",
        required=True,
        metavar="FILE|PHASE",
        help="the flag file to copy: a path, an s3:// URI, or a phase name (dev, staging, "
        "production: flags/<phase>.flagd.json as --phase finds it; ./production for a file "
        "of that name)",
    )
    check = add("validate", "check flag files (default: the three phase files)")
    check.add_argument("files", nargs="*", metavar="FILE")
    cli_ramp.add_parser(commands, common, _Parser)
    cli_retire.add_parser(commands, common)
    cli_report.add_parser(commands, common)
    cli_backfill.add_parser(commands, common)
    return parser


_seconds = argument_type(lambda text: times.parse_duration(text, plain_seconds=True))


@argument_type
def _percent(text: str) -> int:
    try:
        value = int(text.strip().rstrip("%"))
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 100:
        raise ValueError(f"must be 0 to 100, got {value}")
    return value


# -- the command line, checked before any file is read ----------------------------------------

_UNSET = "is the variable you passed unset?"


def _swallowed_command(argv: Sequence[str]) -> str | None:
    """Why the command line failed when ``--file``/``--phase`` took a command's name as its
    value (``--file $PROD status`` with ``PROD`` unset or empty); None otherwise."""
    for at, word in enumerate(argv):
        for option in ("--file", "--phase"):
            if word == option and at + 1 < len(argv):
                value = argv[at + 1]
            elif word.startswith(option + "="):
                value = word[len(option) + 1 :]
            else:
                continue
            if value in COMMANDS:
                return (
                    f"{option} got the command name {value!r}, probably from an empty or unset "
                    f'variable (such as {option} $PROD with PROD unset); quote it: {option} "$PROD"'
                )
    return None


def _not_empty(what: str, value: str | None) -> None:
    if value is not None and value == "":
        raise CliError(f"{what} is empty: {_UNSET}", EXIT_USAGE)


def _check_id(field: str, value: str) -> None:
    """An id given on the command line: refused here (exit 2) as the handler would refuse it,
    and when empty or not printable (a stray control character from a paste)."""
    if value == "":
        raise CliError(f"{field} is empty: {_UNSET}", EXIT_USAGE)
    try:
        validate_id(field, value)
    except PartitionKeyError as err:
        raise CliError(str(err), EXIT_USAGE) from err
    if not value.isprintable():
        raise CliError(
            f"{field} must be printable characters only (no tabs, control or format "
            f"characters): {value!r}",
            EXIT_USAGE,
        )


#: One live file for every command that names none (``--file``, ``--phase``, a PHASE).
FILE_ENV = "AI_AGENT_ROLLOUT_FILE"
#: Set to ``1`` (``true``, ``yes``, ``on``), every change must say why (``--reason``).
REQUIRE_REASON_ENV = "ROLLOUT_REQUIRE_REASON"
_RAMP_CHANGES = frozenset({"start", "pause", "resume", "abort", "promote"})


def reason_required(environ: Mapping[str, str] = os.environ) -> bool:
    """``$ROLLOUT_REQUIRE_REASON`` as a yes or no; exit 2 when it is neither."""
    raw = environ.get(REQUIRE_REASON_ENV, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise CliError(
        f"{REQUIRE_REASON_ENV}={environ[REQUIRE_REASON_ENV]!r}: expected 1 or 0 (true/false, "
        "yes/no, on/off)",
        EXIT_USAGE,
    )


def _check_reason(args: argparse.Namespace) -> None:
    """A change without ``--reason`` while the team requires one: exit 2, nothing read."""
    command = args.command
    changes = command in WRITES or (
        command == "ramp"
        and args.ramp_command in _RAMP_CHANGES
        and not getattr(args, "dry_run", False)
    )
    if not changes or not reason_required():
        return
    if args.reason is None or not args.reason.strip():
        what = f"ramp {args.ramp_command}" if command == "ramp" else command
        raise CliError(
            f"{what} needs --reason TEXT: this team requires a reason on every change "
            f"({REQUIRE_REASON_ENV} is set)",
            EXIT_USAGE,
        )


def _file_from_env(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """``$AI_AGENT_ROLLOUT_FILE`` stands in for ``--file`` when no file is named: no
    ``--file``, no ``--phase`` and no PHASE argument."""
    value = environ.get(FILE_ENV)
    if value is None or args.file is not None or args.phase is not None:
        return
    if getattr(args, "phases", None) or getattr(args, "target_phase", None):
        return
    if not value.strip():
        raise CliError(f"${FILE_ENV} is set but empty: name the live file, or unset it", 2)
    args.file = value.strip()


def _check_command_line(args: argparse.Namespace) -> None:
    """Every value of the command line, before any file is read or lock taken (exit 2)."""
    _file_from_env(args, os.environ)
    _not_empty("--file", args.file)
    _not_empty("--audit-log", args.audit_log)
    if args.file:
        args.file = location(args.file)
    command = args.command
    if command == "validate":
        for name in args.files:
            _not_empty("validate: FILE", name)
        args.files = [location(name) for name in args.files]
    if command in ("allow", "disallow"):
        for endpoint in args.endpoints:
            _check_id("endpoint_id", endpoint)
    if command == "report":
        _not_empty("--html", args.html)
        for endpoint in args.endpoint:
            _check_id("endpoint_id", endpoint)
    if command == "history":
        if args.endpoint is not None:
            _check_id("endpoint_id", args.endpoint)
        _not_empty("--actor", args.actor)
    if command == "explain":
        _check_id("endpoint_id", args.endpoint)
        if args.part_id is not None:
            _check_id("part_id", args.part_id)
    if command == "ramp":
        cli_ramp.check_usage(args)
    if command == "backfill":
        cli_backfill.check_usage(args)
    _check_reason(args)
    if command == "seed":
        if args.file is None:
            raise CliError(
                "seed needs --file PATH|s3://BUCKET/KEY (the live file to create) and "
                "--from FILE|PHASE",
                EXIT_USAGE,
            )
        _not_empty("--from", args.seed_from)
        if args.seed_from not in PHASES:
            args.seed_from = location(args.seed_from)


# -- where files are ------------------------------------------------------------------------

Origin = Literal["file", "checkout", "installed"]

#: This package's folder: installed (not in a checkout), nothing writes in it.
_PACKAGE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class _Target:
    """A flag file a command applies to, and where it comes from: given with ``--file``, a
    phase file of the repository checkout, or the copy installed with the package."""

    phase: str | None
    source: str
    origin: Origin
    #: Where a live file was named (``ai-agent-rollout.toml``'s path, ``$ROLLOUT_LIVE_X``).
    named_by: str | None = None

    def note(self) -> str:
        return f" ({INSTALLED_NOTE})" if self.origin == "installed" else ""


def _is_checkout(directory: Path) -> bool:
    """A checkout of this repository: ``flags/`` beside the package's source (a folder this
    user may not look into is none)."""
    try:
        return (directory / "flags").is_dir() and (directory / _PACKAGE.name).is_dir()
    except OSError:
        return False


def _checkout_file(phase: str) -> Path | None:
    """``flags/<phase>.flagd.json`` of the checkout the current folder is in, if any."""
    try:
        here = Path.cwd()
    except OSError:  # the current folder was removed
        return None
    for directory in (here, *here.parents):
        candidate = directory / "flags" / f"{phase}.flagd.json"
        if candidate.is_file() and _is_checkout(directory):
            return candidate
    return None


def _phase_target(phase: str) -> _Target:
    """The file ``--phase`` names: the checkout's from the current folder up, else the
    shipped copy, which is a checkout's too for an editable install."""
    found = _checkout_file(phase)
    if found is not None:
        return _Target(phase, str(found), "checkout")
    try:
        shipped = default_provider.shipped_flag_file(phase)
    except (FlagConfigError, FileNotFoundError) as err:
        raise CliError(str(err), EXIT_ERROR) from err
    in_checkout = shipped.parent.name == "flags" and _is_checkout(shipped.parent.parent)
    return _Target(phase, str(shipped), "checkout" if in_checkout else "installed")


def _targets(args: argparse.Namespace) -> list[_Target]:
    """The files the command applies to."""
    if args.file is not None:
        return [_Target(None, args.file, "file")]
    if args.phase:
        return [_phase_target(args.phase)]
    return [_phase_target(phase) for phase in PHASES]


def live_files() -> dict[str, Live]:
    """The phases' live files named in ``ai-agent-rollout.toml`` or ``$ROLLOUT_LIVE_<PHASE>``
    (exit 2 for a configuration that is wrong)."""
    try:
        named = config_io.live_files()
    except FlagConfigError as err:
        raise CliError(str(err), EXIT_USAGE) from err
    return {
        phase: Live(phase, None if live.source is None else location(live.source), live.named_by)
        for phase, live in named.items()
    }


def _phases(args: argparse.Namespace, given: Sequence[str]) -> list[str]:
    """The PHASE arguments of a command, checked (exit 2); all phases when none is given."""
    for name in given:
        try:
            check_phase(name, "phase")
        except FlagConfigError as err:
            raise CliError(str(err), EXIT_USAGE) from err
    if given and (args.file is not None or args.phase is not None):
        raise CliError(
            f"{args.command}: PHASE and --file/--phase both name files; give one", EXIT_USAGE
        )
    return list(dict.fromkeys(given)) or list(PHASES)


def _view_targets(args: argparse.Namespace, given: Sequence[str] = ()) -> list[_Target]:
    """The files ``status``, ``history`` and ``report`` look at: ``--file`` or ``--phase``,
    else for each phase (``given``, default all) its named live file, else its phase file."""
    phases = _phases(args, given)
    if args.file is not None or args.phase is not None:
        return _targets(args)
    named = live_files()
    targets = []
    for phase in phases:
        live = named.get(phase)
        if live is not None and live.source is not None:
            targets.append(_Target(phase, live.source, "file", live.named_by))
        else:
            targets.append(_phase_target(phase))
    return targets


def _one_target(args: argparse.Namespace) -> _Target:
    if args.file is None and not args.phase:
        raise CliError(
            f"{args.command} needs --file PATH|s3://BUCKET/KEY or --phase "
            f"{{{','.join(PHASES)}}} (see {PROG} --help)",
            EXIT_USAGE,
        )
    return _targets(args)[0]


def _write_target(args: argparse.Namespace) -> _Target:
    """The file a change goes to: never one inside the installed package."""
    target = _one_target(args)
    if target.origin == "installed":
        name = f"flags/{target.phase}.flagd.json"
        raise CliError(
            f"--phase {target.phase} names the file installed with the package "
            f"({target.source}); run from a checkout of the repository to edit {name}, "
            "or use --file PATH",
            EXIT_USAGE,
        )
    installed = not _is_checkout(_PACKAGE.parent)
    local = not _aws.is_s3_uri(target.source)
    if installed and local and Path(target.source).resolve().is_relative_to(_PACKAGE):
        raise CliError(
            f"{target.source} is inside the installed package ({_PACKAGE}); writes never go "
            "there: edit flags/<phase>.flagd.json in a checkout of the repository, or a live "
            "file with --file PATH",
            EXIT_USAGE,
        )
    return target


def _store(args: argparse.Namespace, source: str) -> FlagStore:
    return open_store(source, audit_log=args.audit_log, lock_timeout=args.lock_timeout)


def _read_valid(store: FlagStore) -> dict[str, Any]:
    snapshot = store.read()
    if snapshot.data is None:
        raise StoreError(f"{store.source}: no such file")
    return parse(snapshot.data, source=store.source)


# -- read-only commands ---------------------------------------------------------------------


def _file_status(
    args: argparse.Namespace, target: _Target, *, last_change: bool = True
) -> FileStatus:
    """One file of ``status`` / ``validate``, as read."""
    hint = None
    if target.origin == "file":  # a live file not created yet: seed makes it
        phase = target.phase or edits.phase_of(None, target.source)
        hint = shlex.join([PROG, "--file", target.source, "seed", "--from", phase or "PHASE"])
    return read_status(
        target.source,
        phase=target.phase,
        origin=target.origin,
        named_by=target.named_by,
        audit_log=args.audit_log,
        now=times.utcnow(),
        hint=hint,
        last_change=last_change,
    )


def _file_statuses(
    args: argparse.Namespace, targets: list[_Target], *, last_change: bool = True
) -> tuple[list[FileStatus], int]:
    found = [_file_status(args, target, last_change=last_change) for target in targets]
    code = EXIT_OK
    for status in found:
        if not status.valid:
            code = max(code, _unusable_code(status))
    errors = [status.error for status in found if status.error]
    _summary_on_stderr(errors, len(found), shown=not args.json)
    return found, code


def _unusable_code(status: FileStatus) -> int:
    """Exit 3 for an invalid file, 2 for a malformed location, 1 for one not read."""
    return {"invalid": EXIT_INVALID, "config": EXIT_USAGE}.get(status.error_kind or "", EXIT_ERROR)


def _status(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    targets = _view_targets(args, args.phases)
    found, code = _file_statuses(args, targets)
    now = times.utcnow()
    if args.json:
        out(json.dumps({"files": [status.to_json(now) for status in found]}, indent=2))
        return code
    width = max(len(str(status.phase or "?")) for status in found)
    for status in found:
        for line in status.lines(now, width):
            out(line)
    return code


def _summary_on_stderr(errors: list[str], total: int, *, shown: bool) -> None:
    # The per-file lines go to stdout; the one-line reason for the exit code to stderr. When
    # the lines on stdout already say why (not --json), it is not said twice.
    if not errors:
        return
    summary = f"{PROG}: error: {len(errors)} of {total} flag file(s) unusable"
    if shown:
        summary += " (above)"
    else:
        first = " ".join(errors[0].split())
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        summary += f": {printable(first)}{more}"
    print(summary, file=sys.stderr, flush=True)


def _validate(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    given = [_Target(None, name, "file") for name in args.files]
    targets = given or _targets(args)
    found, code = _file_statuses(args, targets, last_change=False)
    if args.json:
        now = times.utcnow()
        rows = [status.to_json(now, full=False) for status in found]
        out(json.dumps({"files": rows}, indent=2))
        return code
    for status in found:
        if status.state is not None:
            note = f"; {INSTALLED_NOTE}" if status.origin == "installed" else ""
            state = status.state.describe()
            out(f"ok       {status.source} (version {status.version}{note}): {state}")
        else:
            out(f"INVALID  {status.error}")
            for problem in status.problems[1:]:
                out(f"         also: {problem}")
    return code


def _explain(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    target = _one_target(args)
    source = target.source
    doc = _read_valid(_store(args, source))
    phase = target.phase or edits.phase_of(doc, source)
    said = explain(source, doc, args.endpoint, args.part_id, phase)
    result = {"source": said.pop("source"), "phase": said.pop("phase"), "origin": target.origin}
    result.update(said)
    if args.json:
        out(json.dumps(result, indent=2))
        return EXIT_OK
    part = f", part_id {result['part_id']}" if result["part_id"] else ""
    out(f"endpoint {result['endpoint_id']}{part}, phase {phase or '?'}, {source}{target.note()}:")
    scheme = f"{result['key_scheme']} key"
    if not result["part_id"]:
        scheme = "no part_id: endpoint_id is the key whatever the flag says"
    out(f"  key      {result['routing_key']}  ({scheme})")
    out(f"  variant  {result['variant']}  (reason {result['reason']})")
    out(f"  rule     {result['rule']}")
    if result.get("error_code"):
        out(f"  error    {result['error_code']}: {result.get('error_message') or ''}")
    out(f"  file     version {result['version']}")
    for note in result["notes"]:
        out(f"  note     {note}")
    return EXIT_OK


# -- changes ----------------------------------------------------------------------------------


def _change(args: argparse.Namespace, out: Callable[[str], None], label: str, edit: Edit) -> int:
    target = _write_target(args)
    store = _store(args, target.source)
    rollback = args.command == "rollback"
    change = commit(
        store,
        edit,
        command=label,
        actor=actor(),
        reason=args.reason,
        phase=target.phase,
        repair=rollback,
        create=rollback and bool(getattr(args, "create", False)),
    )
    warnings = _look_alikes(args, change)
    return _report(args, out, target, change, warnings=warnings)


def _look_alikes(args: argparse.Namespace, change: Change) -> list[str]:
    """``allow`` of a name that is a listed one typed differently (case, separators)."""
    if args.command != "allow" or args.remove or not change.changed or change.before is None:
        return []
    listed = change.before.allowed
    warnings = []
    for endpoint in args.endpoints:
        like = edits.spelled_like(endpoint, listed) if endpoint not in listed else []
        if like:
            undo = shlex.join(["disallow", endpoint])
            warnings.append(
                f"{endpoint} differs from the listed {', '.join(like)} only in case or "
                f"separators: check it is not a typo (`{undo}` takes it off again)"
            )
    return warnings


def _seed(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    target = _write_target(args)
    origin = args.seed_from
    source = _phase_target(origin) if origin in PHASES else _Target(None, origin, "file")
    document = _read_valid(_store(args, source.source))
    notes = []
    named = edits.phase_of(None, target.source)
    says = edits.phase_of(document, None)
    if named and says and named != says:
        notes.append(f"the source is a {says} file; the file name says {named}")
    store = _store(args, target.source)
    change = seed(
        store, document, command=f"seed --from {origin}", actor=actor(), reason=args.reason
    )
    return _report(args, out, target, change, warnings=notes, seeded_from=origin)


def _report(
    args: argparse.Namespace,
    out: Callable[[str], None],
    target: _Target,
    change: Change,
    *,
    warnings: list[str],
    seeded_from: str | None = None,
) -> int:
    where = ["--file", target.source] if args.file is not None else ["--phase", change.phase]
    restore_lines = [shlex.join([PROG, *where, *command]) for command in change.restore]
    for warning in warnings:
        print(f"{PROG}: note: {printable(warning)}", file=sys.stderr, flush=True)
    if args.json:
        body = times.as_json(change)
        body.update(origin=target.origin, restore=restore_lines)
        body["notes"] = [*body["notes"], *warnings]
        if seeded_from is not None:
            body["from"] = seeded_from
        out(json.dumps(body, indent=2))
        return EXIT_OK
    _print_change(change, restore_lines, out, seeded_from=seeded_from)
    return EXIT_OK


def _print_change(
    change: Change,
    restore_lines: list[str],
    out: Callable[[str], None],
    *,
    seeded_from: str | None,
) -> None:
    name = change.phase or change.source
    if not change.changed:
        if seeded_from is not None:
            out(f"{change.source}: {change.notes[0]}")
            return
        already = change.after.describe()
        out(f"{name}: unchanged, already {already} (version {change.version_before})")
        return
    if seeded_from is not None:
        out(f"{name}: seeded from {seeded_from}: {change.after.describe()}")
    else:
        out(f"{name}: {change.after.describe()}")
        out(f"  was: {change.before.describe() if change.before else 'unreadable'}")
    versions = f"{change.version_before} -> {change.version_after}"
    if change.version_before is None:
        versions = str(change.version_after)
    out(f"  version {versions}, written to {change.source}; audit {change.audit}")
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
    if command == "seed":
        return _seed(args, out)
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
    if command == "history":
        return cli_history.run(args, out, _view_targets(args, args.phases))
    if command == "report":
        named = live_files() if args.file is None else {}
        live = {p: live.source for p, live in named.items()}
        return cli_report.run(
            args, out, _view_targets(args, args.phases), live, lambda p: _phase_target(p).source
        )
    if command == "retire-check":
        if not args.live:  # the named live files, when --live names none
            named = live_files()
            args.live = [f"{p}={live.source or 'none'}" for p, live in named.items()]
        return cli_retire.run(args, out, lambda phase: _phase_target(phase).source)
    if command == "ramp":
        return _ramp(args, out)
    if command == "backfill":
        return cli_backfill.run(args, out)
    raise CliError(f"unknown command {command!r}", EXIT_USAGE)  # argparse refuses it first


def _ramp(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    """``ramp``: on ``--file``, on the live file named for ``PHASE``, or (``ramp status``)
    on every named live file."""
    if args.file is not None:
        return cli_ramp.run(args, out, _store(args, args.file))
    named = {p: live for p, live in live_files().items() if live.source is not None}
    phase = args.target_phase
    if phase is not None:
        _phases(args, [phase])
        live = named.get(phase)
        if live is None:
            raise CliError(
                f"no live file is named for {phase} (ai-agent-rollout.toml [live] or "
                f"${env_name(phase)}); or give --file",
                EXIT_USAGE,
            )
        return cli_ramp.run(args, out, _store(args, str(live.source)))
    if not named:
        raise CliError(cli_ramp.NO_FILE, EXIT_USAGE)
    if args.ramp_command != "status":  # a command that writes names its file
        raise CliError(
            f"ramp {args.ramp_command} needs its file named: the PHASE ({', '.join(named)}) "
            "or --file",
            EXIT_USAGE,
        )
    if len(named) == 1:
        (live,) = named.values()
        return cli_ramp.run(args, out, _store(args, str(live.source)))
    if args.wait:
        raise CliError(
            f"ramp status --wait needs one file: name the PHASE ({', '.join(named)}) or --file",
            EXIT_USAGE,
        )
    stores = {p: _store(args, str(live.source)) for p, live in named.items()}
    return cli_ramp.status_of_each(args, out, stores)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    try:
        try:
            args = build_parser().parse_args(argv)
        except CliError as err:
            raise CliError(_swallowed_command(argv) or str(err), err.code) from None
        _check_command_line(args)
        # --json output is JSON (ASCII, every control character escaped); the human lines
        # carry ids and paths from files and command lines: escaped for the terminal.
        return _run(args, lambda line: print(line if args.json else printable(line), flush=True))
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise
        return _fail(with_options(err), code, want_json)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_ERROR, want_json)
    except SystemExit as exc:  # --help and argparse's own exits
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def _fail(message: str, code: int, want_json: bool) -> int:
    one_line = " ".join(message.split())
    print(f"{PROG}: error: {printable(one_line)}", file=sys.stderr, flush=True)
    if want_json:
        print(json.dumps({"error": one_line, "exit_code": code}), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
