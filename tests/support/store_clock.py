"""The time a flag store says a file was written, set by a test.

A ramp's bake counts from the file's last write on the store's clock (the local file's
mtime, the S3 object's ``LastModified``). :func:`set_modified` sets that time for real: ``os.utime``
on a local file; for an object of moto's S3 (in process, or its threaded server in this
process) the object's ``last_modified`` in moto's backend, which is what moto's S3 answers
``GetObject`` with. :func:`on_clock` makes every write of a store take its time from a test
clock, so a test's clock and its store's clock are one.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

from ai_agent_handler.ops.store import FlagStore, LocalFileStore, S3Store, Snapshot

__all__ = ["on_clock", "set_modified"]


def set_modified(store: FlagStore, when: datetime.datetime) -> None:
    """The store says its file was last written at ``when``."""
    if isinstance(store, LocalFileStore):
        stamp = when.timestamp()
        os.utime(store.target, (stamp, stamp))
        return
    assert isinstance(store, S3Store)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[store.bucket]
    key = bucket.keys[store.key]
    key.last_modified = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def on_clock(store: FlagStore, clock: Callable[[], datetime.datetime]) -> FlagStore:
    """``store``, whose every write is stamped with ``clock()`` (the test's clock)."""
    write = store.write

    def stamped(data: bytes, snapshot: Snapshot) -> Snapshot:
        written = write(data, snapshot)
        set_modified(store, clock())
        return written

    store_any: Any = store
    store_any.write = stamped
    return store
