"""FlagFileProvider when the source hangs, is swapped for a FIFO, is too deep to parse, or the
process forks mid-check: runs keep deciding on the last good flags within milliseconds."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from openfeature.event import ProviderEvent

from ai_agent_handler import FlagFileProvider
from ai_agent_handler.flag_file.sources import LocalFileSource, S3Source, signature
from bench.drip import DripServer, s3_client
from tests.support import BUCKET
from tests.support.flags import dump, everywhere, started, value, write_atomic

LOG = logging.getLogger("test.flags")
# Generous bounds: they tell "returns at once" from "waits on the source", nothing finer
# (the benchmark measures the real figures).
AT_ONCE = 0.5


class HangingSource(LocalFileSource):
    """A local file whose fetch can be made to hang until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hang_in_fetch = threading.Event()
        self.hang_in_changed = threading.Event()
        self.release = threading.Event()
        self.entered = threading.Event()
        self.hanging_pid = os.getpid()

    def _hang(self, armed: threading.Event) -> None:
        if armed.is_set() and os.getpid() == self.hanging_pid:
            self.entered.set()
            self.release.wait(30)

    def changed(self) -> bool:
        self._hang(self.hang_in_changed)
        return super().changed()

    def fetch(self) -> bytes | None:
        self._hang(self.hang_in_fetch)
        return super().fetch()


def timed(provider: FlagFileProvider) -> tuple[bool, float]:
    began = time.perf_counter()
    answer = value(provider)
    return answer, time.perf_counter() - began


def test_a_hanging_fetch_never_holds_a_run(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(False, version=1)))
    source = HangingSource(path, min_interval=0)
    provider = FlagFileProvider(source, refresh_wait=0.005, timeout=0.3, logger=LOG)
    events = started(provider)
    source.hang_in_fetch.set()
    write_atomic(path, dump(everywhere(True, version=2)))
    answers = [timed(provider) for _ in range(50)]
    assert source.entered.is_set()
    assert {a for a, _ in answers} == {False}  # the last good flags meanwhile
    assert max(t for _, t in answers) < AT_ONCE
    time.sleep(0.35)  # past the check's timeout: a fault, still the last good flags
    assert value(provider) is False
    assert "no answer within 0.3 s" in (provider.fault or "")
    source.release.set()  # the check ends; its answer is used
    deadline = time.monotonic() + 5
    while value(provider) is False and time.monotonic() < deadline:
        time.sleep(0.01)
    assert value(provider) is True and provider.version == "2" and provider.fault is None
    kinds = [e for e, _ in events]
    assert kinds[0] == ProviderEvent.PROVIDER_ERROR and ProviderEvent.PROVIDER_READY in kinds


def test_a_drip_fed_s3_body_is_cut_off_by_the_fetch_timeout() -> None:
    good = dump(everywhere(True, version=1))
    with DripServer() as server:
        server.objects[("flags", "dev.json")] = good
        client = s3_client(server.url, read_timeout=2)
        source = S3Source("s3://flags/dev.json", client=client, min_interval=0, timeout=0.5)
        provider = FlagFileProvider(source, refresh_wait=0.005, logger=LOG)
        started(provider)
        assert value(provider) is True
        server.drip = 0.05  # 1 byte per 50 ms: each read is quick, the body takes minutes
        server.objects[("flags", "dev.json")] = dump(everywhere(False, version=2))
        answers = [timed(provider) for _ in range(20)]
        assert {a for a, _ in answers} == {True}
        assert max(t for _, t in answers) < AT_ONCE
        # The check thread reports its own timeout. No evaluation meanwhile: one made while
        # that thread wakes up late (a loaded machine) would report the still-running check
        # as "no answer" first.
        # The wait only ends early: on a machine loaded by other work the check thread may
        # need many seconds to be scheduled at all.
        deadline = time.monotonic() + 60
        while provider.fault is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "body not received within 0.5 s" in (provider.fault or "")
        assert server.cut_off >= 1 or server.requests >= 2


def test_s3_fetch_alone_ends_by_its_timeout() -> None:
    with DripServer(drip=0.05) as server:
        server.objects[("flags", "dev.json")] = dump(everywhere(True))
        source = S3Source("s3://flags/dev.json", client=s3_client(server.url), timeout=0.4)
        began = time.monotonic()
        with pytest.raises(Exception, match=r"body not received within 0\.4 s"):
            source.fetch()
        assert time.monotonic() - began < 2


class Urllib3WithoutRead1:
    """An S3 body's urllib3 response shaped like urllib3 1.26's (botocore allows 1.26 on
    Python >= 3.10): no ``read1``, the http.client response under it as ``_fp``."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def __getattr__(self, name: str) -> Any:
        if name == "read1":
            raise AttributeError(name)
        return getattr(self._raw, name)


def urllib3_shaped(client: Any, shape: str) -> Any:
    if shape == "urllib3 1.26":

        def reshape(parsed: dict[str, Any], **_: Any) -> None:
            body = parsed.get("Body")
            if body is not None:
                body._raw_stream = Urllib3WithoutRead1(body._raw_stream)

        client.meta.events.register("after-call.s3.GetObject", reshape)
    return client


@pytest.mark.parametrize("shape", ["urllib3 as installed", "urllib3 1.26"])
def test_s3_body_is_read_whole_then_not_again_with_either_urllib3(shape: str) -> None:
    good = dump(everywhere(True, version=1))
    with DripServer() as server:
        server.objects[("flags", "dev.json")] = good
        client = urllib3_shaped(s3_client(server.url), shape)
        source = S3Source("s3://flags/dev.json", client=client, min_interval=0, timeout=2)
        assert source.fetch() == good
        assert source.fetch() is None  # 304 on the connection given back to the pool
        server.objects[("flags", "dev.json")] = changed = dump(everywhere(False, version=2))
        assert source.fetch() == changed
        assert server.requests == 3 and server.cut_off == 0


@pytest.mark.parametrize("shape", ["urllib3 as installed", "urllib3 1.26"])
def test_s3_drip_is_cut_off_by_the_timeout_with_either_urllib3(shape: str) -> None:
    with DripServer(drip=0.05) as server:
        server.objects[("flags", "dev.json")] = dump(everywhere(True))
        client = urllib3_shaped(s3_client(server.url), shape)
        source = S3Source("s3://flags/dev.json", client=client, timeout=0.4)
        began = time.monotonic()
        with pytest.raises(Exception, match=r"body not received within 0\.4 s"):
            source.fetch()
        assert time.monotonic() - began < 2


def test_a_fifo_in_place_of_the_flag_file_is_a_fault_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(True, version=1)))
    provider = FlagFileProvider(path, min_interval=0, refresh_wait=5, logger=LOG)
    started(provider)
    path.unlink()
    os.mkfifo(path)  # nobody writes to it: an open for reading would block forever
    answer, took = timed(provider)
    assert answer is True and took < AT_ONCE
    assert "a FIFO, not a regular file" in (provider.fault or "")
    path.unlink()
    path.write_bytes(dump(everywhere(False, version=2)))
    assert value(provider) is False and provider.fault is None


def test_a_fifo_swapped_in_between_stat_and_open_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    os.mkfifo(path)
    source = LocalFileSource(path)
    began = time.monotonic()
    with pytest.raises(Exception, match="a FIFO"):
        source.fetch()
    assert time.monotonic() - began < AT_ONCE


@pytest.mark.parametrize("live", [b"[" * 100_000 + b"]" * 100_000, b'{"flags": {"x": ' * 5000])
def test_cold_start_with_a_document_too_deep_to_parse_serves_the_shipped_file(
    tmp_path: Path, live: bytes
) -> None:
    path = tmp_path / "live.json"
    path.write_bytes(live)
    shipped = tmp_path / "shipped.json"
    shipped.write_bytes(dump(everywhere(True, version=1)))
    provider = FlagFileProvider(path, fallback_path=shipped, refresh_wait=5, logger=LOG)
    started(provider)
    assert value(provider) is True and provider.loaded_from == str(shipped)
    assert "nested deeper than" in (provider.fault or "") or "invalid JSON" in (
        provider.fault or ""
    )


def test_cold_start_waits_for_a_hanging_source_only_until_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "live.json"
    path.write_bytes(dump(everywhere(False, version=5)))
    shipped = tmp_path / "shipped.json"
    shipped.write_bytes(dump(everywhere(True, version=1)))
    source = HangingSource(path, min_interval=0)
    source.hang_in_fetch.set()
    provider = FlagFileProvider(source, fallback_path=shipped, timeout=0.3, logger=LOG)
    began = time.monotonic()
    started(provider)
    assert time.monotonic() - began < 3
    assert value(provider) is True and provider.loaded_from == str(shipped)
    assert "no answer within 0.3 s" in (provider.fault or "")
    source.release.set()  # the live source answers late: it replaces the shipped file
    deadline = time.monotonic() + 5
    while provider.loaded_from != str(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert value(provider) is False and provider.version == "5"


@pytest.mark.parametrize("where", ["changed", "fetch"])
def test_a_child_forked_mid_check_reloads_flags(tmp_path: Path, where: str) -> None:
    # Another thread is inside the provider's check when the process forks: holding the
    # provider's lock (in changed()) or with a check thread running (in fetch()). The
    # child has neither that thread nor a way to release the lock.
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(False, version=1)))
    source = HangingSource(path, min_interval=0, rehash_interval=3600)
    provider = FlagFileProvider(source, refresh_wait=5, timeout=30, logger=LOG)
    started(provider)
    (source.hang_in_changed if where == "changed" else source.hang_in_fetch).set()
    os.utime(path, ns=(1, 1))  # a change for the check to find
    thread = threading.Thread(target=value, args=(provider,), daemon=True)
    thread.start()
    assert source.entered.wait(5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read)
            write_atomic(path, dump(everywhere(True, version=2)))
            deadline = time.monotonic() + 3
            answer = value(provider)
            while not answer and time.monotonic() < deadline:
                time.sleep(0.01)
                answer = value(provider)
            os.write(write, json.dumps([answer, provider.version]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = json.loads(pipe.read() or "null")
    os.waitpid(pid, 0)
    source.release.set()
    thread.join(5)
    assert result == [True, "2"]


def stat_result(**fields: int) -> os.stat_result:
    base = {"st_mtime_ns": 1, "st_size": 2, "st_ino": 3, "st_ctime_ns": 4}
    base.update(fields)
    values = (0o100644, base["st_ino"], 0, 1, 0, 0, base["st_size"], 0, 0, 0)
    return os.stat_result(
        values,
        {"st_mtime_ns": base["st_mtime_ns"], "st_ctime_ns": base["st_ctime_ns"]},
    )


@pytest.mark.parametrize("field", ["st_mtime_ns", "st_size", "st_ino", "st_ctime_ns"])
def test_each_part_of_the_file_signature_tells_a_version_apart(field: str) -> None:
    assert signature(stat_result()) == signature(stat_result())
    assert signature(stat_result(**{field: 99})) != signature(stat_result())


def test_a_rewrite_seen_only_in_the_ctime_is_loaded(tmp_path: Path) -> None:
    # Same inode, same size, the mtime put back: only the ctime says it changed (the
    # content hash is not due for an hour).
    path = tmp_path / "flags.json"
    old, new = dump(everywhere(False, version=1000)), dump(everywhere(True, version=2))
    assert len(old) == len(new)
    path.write_bytes(old)
    before = os.stat(path)
    provider = FlagFileProvider(
        LocalFileSource(path, min_interval=0, rehash_interval=3600), refresh_wait=5
    )
    started(provider)
    time.sleep(0.01)
    with open(path, "r+b") as fh:  # in place: the inode stays
        fh.write(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    assert after.st_ctime_ns != before.st_ctime_ns
    assert value(provider) is True


# -- S3: the run that starts a check decides on its answer ----------------------------------
class SlowGets:
    """A botocore hook on the client's GetObject: each GET takes ``latency`` seconds more
    (a real in-region GET takes tens of milliseconds), or is held until ``release``."""

    def __init__(self, client: Any, latency: float = 0.0) -> None:
        self.latency = latency
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = threading.Event()
        client.meta.events.register("request-created.s3.GetObject", self._delay)

    def _delay(self, **_: Any) -> None:
        if self.hold.is_set():
            self.held.set()
            self.release.wait(30)
        elif self.latency:
            threading.Event().wait(self.latency)


def s3_provider(s3: Any, **kwargs: Any) -> tuple[FlagFileProvider, SlowGets]:
    s3.put_object(Bucket=BUCKET, Key="live.json", Body=dump(everywhere(True, version=1)))
    source = S3Source(f"s3://{BUCKET}/live.json", client=s3, min_interval=0)
    provider = FlagFileProvider(source, logger=LOG, **kwargs)
    started(provider)
    return provider, SlowGets(s3)


def change(s3: Any, composite: bool, version: int) -> None:
    s3.put_object(Bucket=BUCKET, Key="live.json", Body=dump(everywhere(composite, version=version)))


@pytest.mark.parametrize("latency", [0.0, 0.05, 0.15])
def test_the_first_run_after_an_s3_change_uses_it(s3: Any, latency: float) -> None:
    # The rollback at 3 a.m.: the next run of every environment uses the legacy key, though
    # the GET that brings the change takes as long as a real one.
    provider, gets = s3_provider(s3)
    assert value(provider) is True
    gets.latency = latency
    change(s3, False, 2)
    assert value(provider) is False and provider.version == "2"
    change(s3, True, 3)
    assert value(provider) is True and provider.version == "3"


def test_a_get_slower_than_the_bound_holds_the_run_only_that_long(s3: Any) -> None:
    provider, gets = s3_provider(s3, refresh_wait=0.1)
    gets.hold.set()
    change(s3, False, 2)
    answer, took = timed(provider)
    assert gets.held.is_set()
    assert answer is True  # the last good flags: the GET has not answered
    assert 0.1 <= took < AT_ONCE
    assert timed(provider)[1] < 0.05  # a check is running: the next run does not wait on it
    gets.hold.clear()
    gets.release.set()  # the GET answers; a later run uses it
    deadline = time.monotonic() + 5
    while value(provider) is True and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert value(provider) is False and provider.version == "2"


def test_the_wait_is_sized_to_the_source() -> None:
    from ai_agent_handler.flag_file.sources import LOCAL_REFRESH_WAIT, S3_REFRESH_WAIT

    assert LocalFileSource("x").refresh_wait == LOCAL_REFRESH_WAIT == 0.005
    assert S3Source("s3://b/k").refresh_wait == S3_REFRESH_WAIT == 0.25
    assert FlagFileProvider("s3://b/k").refresh_wait == S3_REFRESH_WAIT
    assert FlagFileProvider("s3://b/k", refresh_wait=0.01).refresh_wait == 0.01
    assert FlagFileProvider("x").refresh_wait == LOCAL_REFRESH_WAIT
