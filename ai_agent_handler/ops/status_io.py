"""Reading one flag file for ``status`` (:mod:`.status` says it): the file, its ramp, its
newest audit record, and what handlers serve while a live file is unusable."""

from __future__ import annotations

import dataclasses
import datetime
from typing import TYPE_CHECKING, Any

from ..exceptions import FlagConfigError, FlagFileError, RampError, StoreError
from ..flag_file import default_provider
from ..flag_file.document import parse
from . import edits, history_io
from .ramp import state_of, view_of
from .status import FileStatus
from .store import open_store

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def read_status(
    source: str,
    *,
    phase: str | None,
    origin: str,
    named_by: str | None = None,
    audit_log: str | None = None,
    s3_client: S3Client | None = None,
    now: datetime.datetime,
    hint: str | None = None,
    last_change: bool = True,
) -> FileStatus:
    """The status of the flag file at ``source``. Nothing it cannot read raises: the status
    says why. ``hint`` is shown when the file does not exist (the ``seed`` command);
    ``last_change`` False: the audit trail is not read."""
    status = FileStatus(phase, source, origin, named_by)
    try:
        store = open_store(source, s3_client=s3_client, audit_log=audit_log)
        snapshot = store.read()
        if snapshot.data is None:
            return _unusable(status, f"{source}: no such file", "missing", (), hint)
        doc = parse(snapshot.data, source=source)
    except FlagFileError as err:
        return _unusable(status, str(err), "invalid", tuple(err.problems), None)
    except (StoreError, FlagConfigError) as err:
        kind = "config" if isinstance(err, FlagConfigError) else "unreadable"
        return _unusable(status, str(err), kind, (), None)
    ramp, ramp_error = None, None
    try:
        ramp = state_of(doc)
    except RampError as err:
        ramp_error = f"{err}; `ramp abort` removes it"
    status = FileStatus(
        phase or edits.phase_of(doc, source),
        source,
        origin,
        named_by,
        version=edits.version_of(doc),
        state=edits.read_state(doc),
        flag=view_of(doc, snapshot.modified or now),
        ramp=ramp,
        ramp_error=ramp_error,
        doc=doc,
    )
    return _with_last_change(status, audit_log, s3_client) if last_change else status


def _unusable(
    status: FileStatus, error: str, kind: str, problems: tuple[str, ...], hint: str | None
) -> FileStatus:
    # A live file (a phase file is no live file) that cannot be used: what handlers serve.
    fallback = fallback_of(status.phase, status.source) if status.origin == "file" else None
    unusable = FileStatus(
        status.phase,
        status.source,
        status.origin,
        status.named_by,
        error=error,
        error_kind=kind,
        problems=problems,
        hint=hint,
        fallback=fallback,
    )
    return unusable


def _with_last_change(
    status: FileStatus, audit_log: str | None, s3_client: S3Client | None
) -> FileStatus:
    try:
        trail = history_io.newest(status.source, audit_log=audit_log, s3_client=s3_client)
    except StoreError as err:
        return dataclasses.replace(status, last_error=str(err))
    return dataclasses.replace(status, last=trail.records[0] if trail.records else None)


def fallback_of(phase: str | None, source: str) -> dict[str, Any] | None:
    """What handlers serve while a live file is unreadable: the shipped file of its phase
    (as this installation has it); None when the phase is unknown."""
    phase = phase or edits.phase_of(None, source)
    if phase is None:
        return None
    try:
        path = default_provider.shipped_flag_file(phase)
        doc = parse(path.read_bytes(), source=str(path))
    except (OSError, FlagFileError, FlagConfigError):
        return None
    state = edits.read_state(doc)
    return {
        "phase": phase,
        "source": str(path),
        "version": edits.version_of(doc),
        "kind": state.kind,
        "description": state.describe(),
    }
