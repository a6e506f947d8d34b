"""``ai-agent-rollout``: steer the partition-key flag through the phase files.

Operators never hand-edit the JSON: every change is one command that validates the new
file, writes it atomically under a lock (a conditional put for ``s3://`` files), bumps
``metadata.version`` and appends an audit record. Running handlers pick the change up on
their next run. ``--help`` shows the commands with examples; ``rollout.md`` is the runbook.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.no_op_provider import NoOpProvider

from . import flag_config, flag_edit
from .flag_config import PHASES, FlagConfigError
from .flag_edit import FlagEditError
from .flag_store import ConflictError, FlagStore, Snapshot, StoreError, open_store
from .flagfile import FlagFileError, parse, validate
from .partition_key import PartitionKeyError
from .rollout import FLAG_KEY, decide, evaluation_context

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "PHASES",
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


class CliError(Exception):
    """An error reported as one line on stderr with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


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
        "file; objects under <key>.audit/ next to an s3:// file)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
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


def _percent(text: str) -> int:
    try:
        value = int(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be 0 to 100, got {value}")
    return value


# -- where files are ------------------------------------------------------------------------


def shipped_flag_file(phase: str) -> Path:
    """The phase file shipped with the package (the deploy-time truth)."""
    try:
        return flag_config.shipped_flag_file(phase)
    except (FlagConfigError, FileNotFoundError) as err:
        raise CliError(str(err), EXIT_ERROR) from err


def _sources(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    """``(phase, source)`` pairs the command applies to."""
    if args.file:
        return [(None, str(args.file))]
    if args.phase:
        return [(args.phase, str(shipped_flag_file(args.phase)))]
    return [(phase, str(shipped_flag_file(phase))) for phase in PHASES]


def _one_source(args: argparse.Namespace) -> tuple[str | None, str]:
    if not args.file and not args.phase:
        raise CliError(
            f"{args.command} needs --file PATH|s3://BUCKET/KEY or --phase "
            f"{{{','.join(PHASES)}}} (see {PROG} --help)",
            EXIT_USAGE,
        )
    return _sources(args)[0]


def _store(args: argparse.Namespace, source: str) -> FlagStore:
    try:
        return open_store(source, audit_log=args.audit_log, lock_timeout=args.lock_timeout)
    except StoreError as err:
        raise CliError(str(err), EXIT_USAGE) from err


def _phase_of(explicit: str | None, doc: dict[str, Any] | None, source: str) -> str | None:
    if explicit:
        return explicit
    metadata = doc.get("metadata") if doc else None
    if isinstance(metadata, dict) and isinstance(metadata.get("phase"), str):
        return str(metadata["phase"])
    name = source.rsplit("/", 1)[-1]
    stem = name.split(".", 1)[0]
    return stem if stem in PHASES else None


def _read_valid(store: FlagStore) -> tuple[Snapshot, dict[str, Any]]:
    try:
        snapshot = store.read()
    except StoreError as err:
        raise CliError(str(err), EXIT_ERROR) from err
    if snapshot.data is None:
        raise CliError(f"{store.source}: no such file", EXIT_ERROR)
    try:
        return snapshot, parse(snapshot.data, source=store.source)
    except FlagFileError as err:
        raise CliError(str(err), EXIT_INVALID) from err


# -- explain ---------------------------------------------------------------------------------

_EXPLAIN_DOMAIN = "ai_agent_handler.cli.explain"


def explain(
    source: str,
    doc: dict[str, Any],
    endpoint: str,
    part_id: str | None,
    phase: str | None,
) -> dict[str, Any]:
    """What a handler decides for ``endpoint`` with the flags in ``source``, and why.

    The decision takes the handler's own path: a :class:`FlagFileProvider` reading
    ``source``, the OpenFeature client of a private domain (the handler's domain is left
    alone), :func:`ai_agent_handler.rollout.decide`. ``doc`` (the same file, already read)
    only names the rule that answered, and for the percentage rule the smallest percentage
    at which this endpoint gets the composite key (found with flagd's evaluator).
    """
    from openfeature import api

    from .flag_provider import FlagFileProvider

    provider = FlagFileProvider(source)
    api.set_provider_and_wait(provider, domain=_EXPLAIN_DOMAIN)
    try:
        decision = decide(
            endpoint,
            part_id,
            run_uuid="explain",
            phase=phase,
            client=api.get_client(domain=_EXPLAIN_DOMAIN),
        )
    finally:
        api.set_provider(NoOpProvider(), domain=_EXPLAIN_DOMAIN)
    state = flag_edit.read_state(doc)
    threshold: int | None = None
    if decision.error_code:
        rule = f"evaluation error {decision.error_code}: the code default, legacy"
    elif state.kind == "disabled":
        rule = "the flag is DISABLED: the code default, legacy"
    elif state.plain:
        rule = f"no targeting: the default variant {state.default_variant!r} for every endpoint"
    elif state.canonical and endpoint in state.allowed:
        rule = "allow-list: this endpoint is listed, composite whatever the percentage"
    elif state.canonical:
        threshold = _composite_from(doc, evaluation_context(endpoint, part_id, phase))
        rule = (
            f"percentage: {state.percent} % of endpoints composite, by a stable hash of the "
            f"endpoint; this one turns composite at percent >= {threshold}"
        )
    else:
        rule = "custom targeting (not the canonical shape) answered"
    return {
        "source": source,
        "phase": phase,
        "endpoint_id": decision.endpoint_id,
        "part_id": decision.part_id,
        "routing_key": decision.routing_key,
        "key_scheme": decision.key_scheme,
        "flag_value": decision.flag_value,
        "variant": decision.variant,
        "reason": decision.reason,
        "error_code": decision.error_code,
        "error_message": decision.error_message,
        "flag_set_version": decision.flag_set_version,
        "rule": rule,
        "composite_from_percent": threshold,
        "state": state.to_json(),
    }


def _composite_from(doc: dict[str, Any], context: EvaluationContext) -> int:
    """The smallest percentage that gives this endpoint the composite key.

    A binary search is exact because the canonical rule is monotonic in the percentage
    (composite bucket first, constant total weight).
    """
    core = FlagdCore()

    def composite_at(percent: int) -> bool:
        core.set_flags(flag_edit.set_percent(doc, percent))
        return core.resolve_boolean_value(FLAG_KEY, False, context).value is True

    low, high = 0, 100
    while low < high:
        middle = (low + high) // 2
        if composite_at(middle):
            high = middle
        else:
            low = middle + 1
    return low


# -- read-only commands ---------------------------------------------------------------------


def _status(args: argparse.Namespace, out: Callable[[str], None]) -> int:
    rows: list[dict[str, Any]] = []
    code = EXIT_OK
    for phase, source in _sources(args):
        row: dict[str, Any] = {"phase": phase, "source": source}
        try:
            _, doc = _read_valid(_store(args, source))
        except CliError as err:
            code = max(code, err.code)
            row.update(valid=False, error=str(err), state=None, version=None)
        else:
            state = flag_edit.read_state(doc)
            row.update(
                phase=_phase_of(phase, doc, source),
                valid=True,
                error=None,
                state=state.to_json(),
                version=flag_edit.version_of(doc),
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
            f"{PROG}: error: {len(errors)} of {total} flag file(s) unusable: {first}{more}",
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
                raise CliError(f"{source}: no such file", EXIT_ERROR)
            doc = parse(snapshot.data, source=source)
        except FlagFileError as err:
            code = max(code, EXIT_INVALID)
            result["problems"] = err.problems
            result["error"] = str(err)
        except (CliError, StoreError) as err:
            code = max(code, getattr(err, "code", EXIT_ERROR))
            result["error"] = str(err)
        else:
            result.update(
                valid=True,
                version=flag_edit.version_of(doc),
                state=flag_edit.read_state(doc).describe(),
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
    phase = _phase_of(phase, doc, source)
    try:
        result = explain(source, doc, args.endpoint, args.part_id, phase)
    except PartitionKeyError as err:
        raise CliError(str(err), EXIT_USAGE) from err
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


def _serialize(doc: dict[str, Any]) -> bytes:
    """Two-space JSON, with short arrays and objects kept on one line.

    The files are reviewed in diffs: one allow-listed endpoint is one changed line, and
    the targeting rule stays readable instead of one token per line.
    """
    return (_pretty(doc, 0) + "\n").encode("utf-8")


def _pretty(value: object, indent: int, width: int = 96) -> str:
    inline = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, (dict, list)) or not value or indent + len(inline) <= width:
        return inline
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, indent + 2, width)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _pretty(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


Edit = Callable[[dict[str, Any]], dict[str, Any]]


def _change(args: argparse.Namespace, out: Callable[[str], None], label: str, edit: Edit) -> int:
    phase, source = _one_source(args)
    store = _store(args, source)
    rollback = args.command == "rollback"
    create = rollback and bool(getattr(args, "create", False))
    notes: list[str] = []
    try:
        with store.locked():
            snapshot = store.read()
            before_doc, new_doc, fresh = _apply(
                store, snapshot, edit, rollback, create, phase, notes
            )
            phase = _phase_of(phase, before_doc or new_doc, source)
            before = flag_edit.read_state(before_doc) if before_doc else None
            after = flag_edit.read_state(new_doc)
            version_before = flag_edit.version_of(before_doc) if before_doc else None
            changed = fresh or new_doc != before_doc
            if changed:
                new_doc = flag_edit.bump_version(new_doc)
                data = _serialize(new_doc)
                problems = validate(new_doc)
                if problems:
                    raise CliError(
                        f"refusing to write an invalid file: {problems[0]}", EXIT_INVALID
                    )
                parse(data, source=source)  # what is written is exactly what was validated
                store.write(data, snapshot)
                record = {
                    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="milliseconds"
                    ),
                    "actor": _actor(),
                    "command": label,
                    "phase": phase,
                    "file": source,
                    "before": before.to_json() if before else None,
                    "after": after.to_json(),
                    "version_before": version_before,
                    "version_after": flag_edit.version_of(new_doc),
                    "reason": args.reason,
                }
                if snapshot.etag:
                    record["etag_before"] = snapshot.etag
                try:
                    store.append_audit(record)
                except StoreError as err:
                    raise CliError(
                        f"the change IS written (version {record['version_after']}) but the "
                        f"audit record failed: {err}",
                        EXIT_ERROR,
                    ) from err
    except ConflictError as err:
        raise CliError(str(err), EXIT_CONFLICT) from err
    except StoreError as err:
        raise CliError(str(err), EXIT_ERROR) from err
    except FlagEditError as err:
        raise CliError(f"{source}: {err}", EXIT_INVALID) from err
    restore = flag_edit.restore_commands(before) if rollback and before and changed else []
    where = f"--file {source}" if args.file else f"--phase {phase}"
    restore_lines = [f"{PROG} {where} {command}" for command in restore]
    result: dict[str, Any] = {
        "source": source,
        "phase": phase,
        "command": label,
        "changed": changed,
        "before": before.to_json() if before else None,
        "after": after.to_json(),
        "version_before": version_before,
        "version_after": flag_edit.version_of(new_doc),
        "audit": store.audit_location if changed else None,
        "restore": restore_lines,
        "notes": notes,
    }
    if args.json:
        out(json.dumps(result, indent=2))
        return EXIT_OK
    name = phase or source
    if not changed:
        out(f"{name}: unchanged, already {after.describe()} (version {version_before})")
        return EXIT_OK
    out(f"{name}: {after.describe()}")
    out(f"  was: {before.describe() if before else 'unreadable'}")
    out(
        f"  version {version_before} -> {result['version_after']}, written to {source}; "
        f"audit {store.audit_location}"
    )
    for note in notes:
        out(f"  note: {note}")
    if restore_lines:
        out("  to restore the previous rollout: " + " && ".join(restore_lines))
    out("  running handlers use it from their next run")
    return EXIT_OK


def _apply(
    store: FlagStore,
    snapshot: Snapshot,
    edit: Edit,
    rollback: bool,
    create: bool,
    phase: str | None,
    notes: list[str],
) -> tuple[dict[str, Any] | None, dict[str, Any], bool]:
    """``(document before, document after, written from scratch)``."""
    if snapshot.data is None and not create:
        hint = " (check the path; `rollback --create` writes a new legacy file)" if rollback else ""
        raise CliError(f"{store.source}: no such file{hint}", EXIT_ERROR)
    try:
        before = parse(snapshot.data, source=store.source) if snapshot.data is not None else None
    except FlagFileError as err:
        if not rollback:
            raise CliError(
                f"{err} (fix the file, or run `rollback` to write a clean legacy flag)",
                EXIT_INVALID,
            ) from err
        before = None
        notes.append(f"the file was invalid ({err}); wrote a clean legacy flag file")
    if before is not None:
        return before, edit(before), False
    # rollback of a missing or broken file: legacy everywhere all the same. Keep what can
    # be kept (other flags, metadata) when that gives a valid file, else start afresh,
    # continuing the old version sequence when it can still be read.
    raw = _loose_json(snapshot.data)
    phase = _phase_of(phase, raw, store.source)
    if snapshot.data is None:
        notes.append("the file did not exist; created it with a legacy flag")
    if raw is not None:
        repaired = flag_edit.rollback(raw, phase=phase)
        if not validate(flag_edit.bump_version(repaired)):
            return None, repaired, True
    fresh = flag_edit.fresh_document(phase or "unknown", version=_loose_version(raw))
    return None, fresh, True


def _loose_json(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _loose_version(doc: dict[str, Any] | None) -> int:
    return (flag_edit.version_of(doc) or 0) if doc else 0


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
        return _change(args, out, f"set {variant}", lambda d: flag_edit.set_everywhere(d, variant))
    if command in ("allow", "disallow"):
        endpoints = list(args.endpoints)
        if command == "disallow" or args.remove:
            label = "disallow " + " ".join(endpoints)
            return _change(args, out, label, lambda d: flag_edit.disallow(d, endpoints))
        label = "allow " + " ".join(endpoints)
        return _change(args, out, label, lambda d: flag_edit.allow(d, endpoints))
    if command == "percent":
        percent = args.percent
        return _change(args, out, f"percent {percent}", lambda d: flag_edit.set_percent(d, percent))
    if command == "rollback":
        return _change(args, out, "rollback", flag_edit.rollback)
    raise CliError(f"unknown command {command!r}", EXIT_USAGE)  # argparse refuses it first


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    want_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        return _run(args, lambda line: print(line, flush=True))
    except CliError as err:
        return _fail(str(err), err.code, want_json)
    except FlagEditError as err:
        return _fail(str(err), EXIT_INVALID, want_json)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_ERROR, want_json)
    except SystemExit as exc:  # --help and argparse's own exits
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def _fail(message: str, code: int, want_json: bool) -> int:
    one_line = " ".join(message.split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)
    if want_json:
        print(json.dumps({"error": one_line, "exit_code": code}), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
