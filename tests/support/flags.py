"""Helpers shared by the flag tests: phase documents, rollout edits, writers, recorders."""

from __future__ import annotations

import copy
import errno
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails

from ai_agent_handler import FLAG_KEY, FlagFileProvider

from . import FLAGS_DIR


def phase_doc(phase: str) -> dict[str, Any]:
    """A fresh copy of the shipped phase file's document."""
    doc: dict[str, Any] = json.loads((FLAGS_DIR / f"{phase}.flagd.json").read_text())
    return doc


def rollout(
    phase: str = "staging",
    *,
    allow: list[str] | None = None,
    percent: int = 0,
    version: int | str = 2,
) -> dict[str, Any]:
    """The staging/production document with the canonical targeting shape filled in."""
    doc = phase_doc(phase)
    rule = doc["flags"][FLAG_KEY]["targeting"]["if"]
    rule[0]["in"][1] = list(allow or [])
    buckets = rule[2]["fractional"]
    buckets[1][1], buckets[2][1] = percent, 100 - percent
    doc["metadata"]["version"] = version
    return doc


def everywhere(value: bool, *, version: int | str = 2) -> dict[str, Any]:
    """A document that resolves the flag to ``value`` for every endpoint."""
    doc = phase_doc("dev")
    doc["flags"][FLAG_KEY]["defaultVariant"] = "composite" if value else "legacy"
    doc["metadata"]["version"] = version
    return doc


def dump(doc: object) -> bytes:
    return json.dumps(doc, indent=2).encode()


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the file and rename over it (how editors and the CLI save)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def context(endpoint: str, part: str | None = None) -> EvaluationContext:
    attributes = {"endpoint_id": endpoint}
    if part:
        attributes["part_id"] = part
    return EvaluationContext(targeting_key=endpoint, attributes=attributes)


def value(provider: FlagFileProvider, endpoint: str = "ep-1") -> bool:
    """The provider's answer for one endpoint (raises what the provider raises)."""
    return provider.resolve_boolean_details(FLAG_KEY, False, context(endpoint)).value


class Events(list[tuple[ProviderEvent, ProviderEventDetails]]):
    """Events a provider emitted, in order (attached directly: delivered synchronously)."""

    def of(self, kind: ProviderEvent) -> list[ProviderEventDetails]:
        return [details for event, details in self if event is kind]


def started(provider: FlagFileProvider) -> Events:
    """Attach an event recorder and initialize the provider, as the SDK would."""
    events = Events()
    provider.attach(lambda _p, event, details: events.append((event, details)))
    provider.initialize(EvaluationContext())
    return events


class EventWaiter:
    """Waits for events delivered through the OpenFeature API (handlers run on a pool)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, details: Any) -> None:
        with self._cond:
            self.seen.append(details)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> list[Any]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.seen) >= count, timeout)
            return list(self.seen)


def deep(doc: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(doc)


# -- every way a flag file gets changed on disk ----------------------------------


def _rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _in_place_truncating(path: Path, data: bytes) -> None:
    # Same inode, no O_TRUNC: shrink then write, as some tools do.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, data)
    finally:
        os.close(fd)


def _mtime_backwards(path: Path, data: bytes) -> None:
    before = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns - 10**9, before.st_mtime_ns - 10**9))


def _restore_with_cp_p(path: Path, data: bytes) -> None:
    # An operator keeps an older copy and restores it with its old mtime (cp -p, rsync -a).
    backup = path.with_name("backup.json")
    backup.write_bytes(data)
    os.utime(backup, ns=(10**18, 10**18))  # 2001: older than anything loaded
    shutil.copy2(backup, path)


def _delete_and_recreate(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


CHANGES: dict[str, Callable[[Path, bytes], None]] = {
    "rewrite": _rewrite,
    "atomic-rename": write_atomic,
    "in-place-truncating": _in_place_truncating,
    "mtime-backwards": _mtime_backwards,
    "cp-p-restore": _restore_with_cp_p,
    "delete-recreate": _delete_and_recreate,
}


def disk_full_for(monkeypatch: Any, log: Path) -> None:
    """The boundary: ``os.write`` on ``log``'s descriptor fails with ENOSPC (a full disk)."""
    real_write = os.write

    def write(fd: int, data: Any) -> int:
        if log.exists() and os.path.samestat(os.fstat(fd), log.stat()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
