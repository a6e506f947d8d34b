"""An operator's change to a flag file, as one transaction: :func:`commit` (and :func:`seed`).

The I/O of :mod:`.edits`: ``commit(store, edit, ...)`` applies a pure edit to the file of a
:mod:`.store`, gives the result the next ``metadata.version``, validates exactly what will
be written, writes it and keeps one record in the audit log (:mod:`.audit`). What refuses
the change (a missing file or folder, an invalid file, an edit that cannot apply) and an
edit that changes nothing are answered before the lock is taken: nothing is written or
created, not even the lock file.

**Versions only grow.** The next version is greater than every version the file has had:
its own (read loosely from a broken file) and every version its audit records name. A
rollback of a broken file, a file copied over the live one or one seeded again after it was
deleted continues the sequence a fleet has seen.

**A change is audited or not made.** The log is opened before the file is written; when the
record cannot be kept after the write, the write is undone and the error says the change
was NOT made (only when the undo fails too, that it is written without its record).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ..exceptions import ConflictError, FlagEditError, FlagFileError, StoreError
from ..flag_file.document import parse, serialize, validate
from . import audit, edits
from .edits import RolloutState
from .store import FlagStore, Snapshot, highest

#: A pure edit of a flag document (:mod:`.edits`): returns a new document.
Edit = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Change:
    """What :func:`commit` or :func:`seed` did to a flag file."""

    source: str
    phase: str | None
    command: str
    #: False when nothing was written or audited (the edit changed nothing, or the file
    #: to seed exists already).
    changed: bool
    #: The rollout before (None when the file was missing or unreadable) and after.
    before: RolloutState | None
    after: RolloutState
    version_before: int | None
    version_after: int | None
    #: Where the audit record went; None when nothing was written.
    audit: str | None
    #: Subcommands, as argument lists, that bring back the rollout a rollback cleared
    #: (empty otherwise).
    restore: tuple[tuple[str, ...], ...] = ()
    #: What the operator should know beyond the change itself (a repaired or created file).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Plan:
    """An edit worked out on one snapshot of the file, not yet written."""

    snapshot: Snapshot
    before_doc: dict[str, Any] | None
    new_doc: dict[str, Any]
    phase: str | None
    notes: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.before_doc is None or self.new_doc != self.before_doc

    def unchanged(self, source: str, command: str) -> Change:
        before = edits.read_state(self.before_doc) if self.before_doc is not None else None
        version = edits.version_of(self.before_doc) if self.before_doc is not None else None
        return Change(
            source,
            self.phase,
            command,
            False,
            before,
            edits.read_state(self.new_doc),
            version,
            version,
            audit=None,
            notes=self.notes,
        )


def _plan(
    store: FlagStore,
    snapshot: Snapshot,
    edit: Edit,
    *,
    phase: str | None,
    repair: bool,
    create: bool,
) -> _Plan:
    """Parse ``snapshot`` and apply ``edit``; raise what refuses the change."""
    source = store.source
    notes: list[str] = []
    if snapshot.data is None and not create:
        if repair:  # check the path; a repair that may create the file writes a legacy one
            raise StoreError(f"{source}: no such file", options={"create": ""})
        raise StoreError(f"{source}: no such file")
    before_doc: dict[str, Any] | None = None
    if snapshot.data is not None:
        try:
            before_doc = parse(snapshot.data, source=source)
        except FlagFileError as err:
            if not repair:
                raise FlagFileError(
                    f"{err} (fix the file, or run `rollback` to write a clean legacy flag)",
                    err.problems,
                ) from err
            notes.append(f"the file was invalid ({err}); wrote a clean legacy flag file")
    if before_doc is not None:
        try:
            new_doc = edit(before_doc)
        except FlagEditError as err:
            err.args = (f"{source}: {err}",)  # the same error, saying which file
            raise
    else:
        # A missing or broken file: only a rollback (legacy everywhere) gets here.
        store.check_rewrite(snapshot)
        if snapshot.data is None:
            notes.append("the file did not exist; created it with a legacy flag")
        raw = edits.loose_document(snapshot.data)
        new_doc, dropped = edits.rebuild_legacy(raw, phase=phase or edits.phase_of(raw, source))
        notes.extend(f"dropped {what}: nested too deep to keep" for what in dropped)
    phase = phase or edits.phase_of(before_doc or new_doc, source)
    return _Plan(snapshot, before_doc, new_doc, phase, tuple(notes))


def _next_version(store: FlagStore, snapshot: Snapshot) -> int:
    """Greater than every version the file has had: its own (read loosely, the file may be
    broken) and every version its audit records name."""
    return (highest(edits.loose_version(snapshot.data), store.highest_audited_version()) or 0) + 1


def commit(
    store: FlagStore,
    edit: Edit,
    *,
    command: str,
    actor: str,
    reason: str | None = None,
    phase: str | None = None,
    repair: bool = False,
    create: bool = False,
    details: Mapping[str, Any] | None = None,
    expected: Snapshot | None = None,
) -> Change:
    """Apply ``edit`` to the flag file of ``store`` as one locked, validated, audited write.

    A missing file is an error unless ``create``; an invalid one is refused, or with
    ``repair`` rebuilt as legacy everywhere (:func:`.edits.rebuild_legacy`). Under the lock
    the file is read again, edited, versioned, validated, written (a conditional put on S3)
    and audited with one record naming ``actor``, ``command`` and ``reason``.

    Raises :class:`~ai_agent_handler.StoreError` (missing file or folder, I/O or AWS error,
    a symlink where none may be, audit records that cannot be read or kept: the change is
    then not made, or -- when undoing it failed too -- written without its record, which
    the message says), :class:`~ai_agent_handler.ConflictError` (someone else changed the
    file or holds the lock; nothing written), :class:`~ai_agent_handler.FlagFileError` (an
    invalid file or result; nothing written) and :class:`~ai_agent_handler.FlagEditError`
    (the edit cannot apply, its message prefixed with the file).

    ``details`` are more fields of the audit record (a ramp's evidence and trigger).
    ``expected`` makes the write conditional on the file being exactly what that snapshot
    read (a decision taken on it): anything else raises :class:`ConflictError` (on S3 the
    put's ``IfMatch`` on its ETag is that condition; locally the bytes under the lock).
    """
    source = store.source
    store.check_place()

    def plan(snapshot: Snapshot) -> _Plan:
        return _plan(store, snapshot, edit, phase=phase, repair=repair, create=create)

    planned: _Plan | None = None
    if store.has_lock_file or expected is not None:
        planned = plan(expected or store.read())
        if not planned.changed:
            return planned.unchanged(source, command)
    with store.locked():
        if expected is not None and expected.etag:
            snapshot = expected  # the put's IfMatch refuses any change since it was read
        else:
            snapshot = store.read()
            if expected is not None and snapshot.data != expected.data:
                raise ConflictError(
                    f"{source} was changed by someone else since it was read; nothing written"
                )
        if planned is None or planned.snapshot != snapshot:
            planned = plan(snapshot)
        if not planned.changed:
            return planned.unchanged(source, command)
        version = _next_version(store, snapshot)
        return _write(store, planned, version, command, actor, reason, details, restore=repair)


def seed(
    store: FlagStore,
    document: Mapping[str, Any],
    *,
    command: str,
    actor: str,
    reason: str | None = None,
    phase: str | None = None,
) -> Change:
    """Create the flag file of ``store`` from ``document`` (a valid flag document, such as
    a shipped phase file) unless it exists: running it again is harmless.

    The file gets ``metadata.version`` = max(the document's version, the highest version
    its audit records name + 1), so a file seeded again after it was deleted continues its
    version sequence. It is written only if it still does not exist (a hard link of the
    complete temp file locally, ``IfNoneMatch="*"`` on S3): of two seeders only one writes,
    the other finds the file seeded. An existing file is left alone: the result then has
    ``changed`` False and its version; an existing file that is not a valid flag file
    raises :class:`~ai_agent_handler.FlagFileError`. Audited like every change.
    """
    store.check_place()
    if store.has_lock_file and (snapshot := store.read()).data is not None:
        return _already_seeded(store, snapshot, command, phase)
    with store.locked():
        snapshot = store.read()
        if snapshot.data is not None:
            return _already_seeded(store, snapshot, command, phase)
        store.check_rewrite(snapshot)
        version = max(edits.version_of(document) or 0, (store.highest_audited_version() or 0) + 1)
        phase = phase or edits.phase_of(document, store.source)
        planned = _Plan(snapshot, None, dict(document), phase, ())
        try:
            return _write(store, planned, version, command, actor, reason)
        except ConflictError:
            # Someone else created the file since it was read: theirs stands.
            return _already_seeded(store, store.read(), command, phase, conflict=True)


def _write(
    store: FlagStore,
    planned: _Plan,
    version: int,
    command: str,
    actor: str,
    reason: str | None,
    details: Mapping[str, Any] | None = None,
    *,
    restore: bool = False,
) -> Change:
    """Write ``planned`` as ``version`` with its audit record (under the store's lock)."""
    source, snapshot = store.source, planned.snapshot
    new_doc = edits.with_version(planned.new_doc, version)
    problems = validate(new_doc)
    if problems:
        raise FlagFileError(f"refusing to write an invalid file: {problems[0]}", problems)
    data = serialize(new_doc)
    parse(data, source=source)  # what is written is exactly what was validated
    before = edits.read_state(planned.before_doc) if planned.before_doc is not None else None
    after = edits.read_state(new_doc)
    version_before = edits.loose_version(snapshot.data)
    record = audit.record(
        actor=actor,
        command=command,
        phase=planned.phase,
        source=source,
        before=before,
        after=after,
        version_before=version_before,
        version_after=version,
        reason=reason,
        etag=snapshot.etag,
        details=details,
    )
    with store.open_audit() as log:  # a change that cannot be audited stops here
        written = store.write(data, snapshot)
        try:
            log.append(record)
        except StoreError as err:
            _undo(store, written, snapshot, err, version)
    return Change(
        source,
        planned.phase,
        command,
        True,
        before,
        after,
        version_before,
        version,
        audit=store.audit_location,
        restore=tuple(edits.restore_commands(before)) if restore and before else (),
        notes=planned.notes,
    )


def _already_seeded(
    store: FlagStore,
    snapshot: Snapshot,
    command: str,
    phase: str | None,
    *,
    conflict: bool = False,
) -> Change:
    source = store.source
    if snapshot.data is None:  # created and removed again while we looked
        raise ConflictError(f"{source} changed while it was seeded; nothing written, run again")
    try:
        doc = parse(snapshot.data, source=source)
    except FlagFileError as err:
        raise FlagFileError(
            f"{source} exists but is not a valid flag file ({err}); unchanged "
            "(`rollback` repairs it)",
            err.problems,
        ) from err
    note = f"already seeded (version {edits.version_of(doc)}); unchanged"
    if conflict:
        note += " (someone else seeded it at the same time)"
    unchanged = _Plan(snapshot, doc, doc, phase or edits.phase_of(doc, source), (note,))
    return unchanged.unchanged(source, command)


def _undo(
    store: FlagStore, written: Snapshot, previous: Snapshot, failure: StoreError, version: int
) -> NoReturn:
    """Put ``previous`` back after an audit record failed; raise what happened."""
    try:
        store.undo(written, previous)
    except StoreError as err:
        raise StoreError(
            f"the change IS written (version {version}) but NOT audited: {failure}; "
            f"putting the previous file back failed too: {err}"
        ) from failure
    raise StoreError(
        f"the change was NOT made: {failure}; {store.source} is back as it was"
    ) from failure
