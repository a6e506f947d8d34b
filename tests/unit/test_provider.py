"""FlagFileProvider: live reload, last-known-good on every fault, cold start, events, cost."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from openfeature import api
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.provider import ProviderStatus

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, FlagFileProvider
from ai_agent_handler.flag_file.sources import LocalFileSource
from tests.support.flags import (
    CHANGES,
    EventWaiter,
    context,
    dump,
    everywhere,
    phase_doc,
    rollout,
    started,
    value,
    write_atomic,
)

LOG = "test.flags"


def _provider(path: Path, **kwargs: Any) -> FlagFileProvider:
    kwargs.setdefault("min_interval", 0)
    kwargs.setdefault("refresh_wait", 5)  # checks here finish in ms: never race the wait
    return FlagFileProvider(path, logger=logging.getLogger(LOG), **kwargs)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_every_kind_of_change_is_loaded_on_the_next_evaluation(
    tmp_path: Path, change: Callable[[Path, bytes], None]
) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(False, version=1)))
    provider = _provider(path)
    events = started(provider)
    assert value(provider) is False
    change(path, dump(everywhere(True, version=2)))
    assert value(provider) is True
    (changed,) = events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
    assert changed.flags_changed == [FLAG_KEY]
    assert changed.metadata["version"] == "2"
    assert provider.version == "2" and provider.fault is None


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: write_atomic(path, data)


def _with_flag(**changes: Any) -> bytes:
    doc = everywhere(False, version=9)
    doc["flags"][FLAG_KEY].update(changes)
    return dump(doc)


def _replace_by_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _restore(path: Path) -> None:
    if path.is_dir():
        path.rmdir()


# (id, how the file breaks, words in the fault) -- each must keep the last good flags.
FAULTS: list[tuple[str, Callable[[Path], None], str]] = [
    ("garbage-bytes", _write(b"\x89PNG\r\n\x1a\n\x00\x00"), "not UTF-8 text"),
    ("half-written", _write(dump(everywhere(False))[:90]), "invalid JSON"),
    ("empty", _write(b""), "empty document"),
    ("not-json", _write(b"composite-partition-key: legacy\n"), "invalid JSON"),
    ("not-flagd", _write(b'{"composite-partition-key": false}'), "flags is missing"),
    ("default-not-variant", _write(_with_flag(defaultVariant="off")), "'off' is not a variant"),
    (
        "non-boolean-variants",
        _write(_with_flag(variants={"composite": "yes", "legacy": "no"})),
        "variants must be exactly",
    ),
    (
        "targeting-not-variant",
        _write(_with_flag(targeting={"if": [True, "on", "legacy"]})),
        "can return 'on'",
    ),
    ("deleted", lambda p: p.unlink(), "no such file"),
    ("directory", _replace_by_directory, "is a directory"),
]


@pytest.mark.parametrize(
    ("break_it", "expected"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
def test_faults_keep_the_last_good_flags_and_recover(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    break_it: Callable[[Path], None],
    expected: str,
) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(True, version=1)))
    provider = _provider(path)
    events = started(provider)
    break_it(path)
    for _ in range(5):
        assert value(provider) is True  # never raises, never flips
    assert provider.fault is not None and expected in provider.fault
    assert provider.version == "1"
    (error,) = events.of(ProviderEvent.PROVIDER_ERROR)
    assert error.message == provider.fault and error.error_code is not None
    assert len(_errors(caplog)) == 1 and expected in _errors(caplog)[0]

    _restore(path)
    write_atomic(path, dump(everywhere(False, version=3)))
    assert value(provider) is False
    assert provider.fault is None and provider.version == "3"
    assert [e for e, _ in events[-2:]] == [
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ProviderEvent.PROVIDER_READY,
    ]


def test_each_distinct_fault_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(True)))
    provider = _provider(path)
    events = started(provider)
    for broken in (b"{", b"{", b"[1]", b"[1]", b"{"):
        write_atomic(path, broken)
        for _ in range(3):
            assert value(provider) is True
    assert len(events.of(ProviderEvent.PROVIDER_ERROR)) == 3
    assert len(_errors(caplog)) == 3


def test_recovery_with_the_same_content_emits_ready_only(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    good = dump(everywhere(True))
    path.write_bytes(good)
    provider = _provider(path)
    events = started(provider)
    path.unlink()
    assert value(provider) is True
    path.write_bytes(good)
    assert value(provider) is True
    assert [e for e, _ in events] == [ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_READY]


def test_cold_start_falls_back_to_the_shipped_file_and_keeps_trying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = tmp_path / "live.json"
    fallback = tmp_path / "shipped.json"
    fallback.write_bytes(dump(everywhere(False, version=1)))
    provider = _provider(live, fallback_path=fallback)
    events = started(provider)
    assert value(provider) is False
    assert provider.loaded_from == str(fallback)
    assert provider.fault is not None and "no such file" in provider.fault
    (line,) = _errors(caplog)
    assert "unreadable at start" in line and str(fallback) in line
    assert value(provider) is False  # still missing: not logged again
    assert len(_errors(caplog)) == 1

    live.write_bytes(dump(everywhere(True, version=7)))
    assert value(provider) is True
    assert provider.loaded_from == str(live) and provider.fault is None
    assert [e for e, _ in events] == [
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ProviderEvent.PROVIDER_READY,
    ]


def test_cold_start_with_an_invalid_live_file_uses_the_fallback(tmp_path: Path) -> None:
    live = tmp_path / "live.json"
    live.write_bytes(b'{"flags": ')
    fallback = tmp_path / "shipped.json"
    fallback.write_bytes(dump(everywhere(True)))
    provider = _provider(live, fallback_path=fallback)
    started(provider)
    assert value(provider) is True and "invalid JSON" in (provider.fault or "")


def test_without_fallback_not_ready_until_the_file_appears(
    tmp_path: Path, no_provider: None
) -> None:
    live = tmp_path / "live.json"
    provider = _provider(live)
    with pytest.raises(ProviderNotReadyError):
        api.set_provider_and_wait(provider, domain=FLAG_DOMAIN)
    client = api.get_client(FLAG_DOMAIN)
    details = client.get_boolean_details(FLAG_KEY, False, context("ep"))
    assert details.value is False and details.error_code == ErrorCode.PROVIDER_NOT_READY
    live.write_bytes(dump(everywhere(True)))
    assert client.get_boolean_value(FLAG_KEY, False, context("ep")) is True
    assert client.get_provider_status() == ProviderStatus.READY


class CountingSource(LocalFileSource):
    """A local source that counts how often it is asked, and how."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probes = 0
        self.calls = 0

    def changed(self) -> bool:
        self.probes += 1
        return super().changed()

    def fetch(self) -> bytes | None:
        self.calls += 1
        return super().fetch()


def test_freshness_is_checked_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(False)))
    source = CountingSource(path, min_interval=3600)
    provider = FlagFileProvider(source)
    started(provider)
    write_atomic(path, dump(everywhere(True)))
    assert {value(provider) for _ in range(1000)} == {False}  # the change waits its turn
    assert (source.probes, source.calls) == (0, 1)  # initialize only: no stat per evaluation


def test_every_evaluation_stats_and_only_a_change_is_read(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(False)))
    source = CountingSource(path, min_interval=0, rehash_interval=3600)
    provider = FlagFileProvider(source, refresh_wait=5)
    started(provider)
    for _ in range(10):
        assert value(provider) is False
    assert (source.probes, source.calls) == (10, 1)
    write_atomic(path, dump(everywhere(True)))
    assert value(provider) is True  # the first evaluation after the write
    assert (source.probes, source.calls) == (11, 2)


def test_events_and_status_through_the_openfeature_api(tmp_path: Path, no_provider: None) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(False, version=1)))
    client = api.get_client(FLAG_DOMAIN)
    changed, errors = EventWaiter(), EventWaiter()
    client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changed)
    client.add_handler(ProviderEvent.PROVIDER_ERROR, errors)
    provider = _provider(path)
    api.set_provider_and_wait(provider, domain=FLAG_DOMAIN)
    # The check's events go out late (a busy machine): the evaluation that waited for the
    # check must still find the status it changed. The hold ends after the assertion, or
    # after 0.5 s when the evaluation is (rightly) still waiting for the events.
    assertion_done = threading.Event()
    emit = provider.emit

    def late(event: ProviderEvent, details: Any) -> None:
        assertion_done.wait(0.5)
        emit(event, details)

    provider.emit = late  # type: ignore[method-assign]

    write_atomic(path, b"{")
    assert client.get_boolean_value(FLAG_KEY, True, context("ep")) is False
    assert client.get_provider_status() == ProviderStatus.ERROR
    assertion_done.set()
    assert "invalid JSON" in errors.wait(1)[0].message

    assertion_done.clear()
    write_atomic(path, dump(everywhere(True, version=2)))
    details = client.get_boolean_details(FLAG_KEY, False, context("ep"))
    assert details.value is True and details.flag_metadata["version"] == 2
    assert client.get_provider_status() == ProviderStatus.READY
    assertion_done.set()
    (event,) = changed.wait(1)
    assert event.flags_changed == [FLAG_KEY] and event.provider_name == "FlagFileProvider"


def test_concurrent_evaluations_during_reloads(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(False, version=0)))
    provider = _provider(path)
    started(provider)
    stop = threading.Event()
    seen: list[set[Any]] = [set() for _ in range(6)]
    failures: list[BaseException] = []

    def evaluate(mine: set[Any]) -> None:
        try:
            while not stop.is_set():
                details = provider.resolve_boolean_details(FLAG_KEY, False, context("ep"))
                mine.add((details.value, details.error_code))
        except BaseException as err:  # surfaced below
            failures.append(err)

    threads = [threading.Thread(target=evaluate, args=(s,)) for s in seen]
    for thread in threads:
        thread.start()
    for version in range(1, 41):
        write_atomic(path, dump(everywhere(version % 2 == 1, version=version)))
    write_atomic(path, dump(everywhere(True, version=99)))
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures
    assert set().union(*seen) <= {(True, None), (False, None)}
    assert value(provider) is True and provider.version == "99"


def test_quarter_rollout_matches_flagd_core_and_is_stable_across_reloads(tmp_path: Path) -> None:
    endpoints = [f"aws-endpoint-{i}" for i in range(1000)]
    path = tmp_path / "flags.json"
    path.write_bytes(dump(rollout(percent=25, version=1)))
    provider = _provider(path)
    started(provider)
    composite = {e for e in endpoints if value(provider, e)}
    assert 200 <= len(composite) <= 300

    core = FlagdCore()
    core.set_flags(rollout(percent=25, version=1))
    alone = {e for e in endpoints if core.resolve_boolean_value(FLAG_KEY, False, context(e)).value}
    assert composite == alone

    for version in (2, 3):  # reloads (a version bump each) do not reshuffle endpoints
        write_atomic(path, dump(rollout(percent=25, version=version)))
        assert {e for e in endpoints if value(provider, e)} == composite
        assert provider.version == str(version)
    write_atomic(path, dump(rollout(percent=50, version=4)))
    half = {e for e in endpoints if value(provider, e)}
    assert composite < half  # raising the share only moves endpoints to composite


def test_flag_set_metadata_is_exposed(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(phase_doc("production")))
    provider = _provider(path)
    started(provider)
    details = provider.resolve_boolean_details(FLAG_KEY, True, context("ep"))
    assert details.flag_metadata == {
        "flagSetId": "ai_agent_handler",
        "phase": "production",
        "version": 1,
    }
    assert provider.flag_set_metadata["version"] == 1
    assert provider.get_metadata().name == "FlagFileProvider"


def test_other_types_resolve_in_flagd_mode(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    doc = {
        "flags": {
            "s": {"state": "ENABLED", "variants": {"a": "x"}, "defaultVariant": "a"},
            "i": {"state": "ENABLED", "variants": {"a": 3}, "defaultVariant": "a"},
            "f": {"state": "ENABLED", "variants": {"a": 0.5}, "defaultVariant": "a"},
            "o": {"state": "ENABLED", "variants": {"a": {"k": 1}}, "defaultVariant": "a"},
        }
    }
    path.write_bytes(dump(doc))
    provider = _provider(path, strict=False)
    started(provider)
    assert provider.resolve_string_details("s", "").value == "x"
    assert provider.resolve_integer_details("i", 0).value == 3
    assert provider.resolve_float_details("f", 0.0).value == 0.5
    assert provider.resolve_object_details("o", {}).value == {"k": 1}
    # The same file is refused by the phase-file rules (no partition-key flag, no version).
    with pytest.raises(ProviderNotReadyError):
        started(_provider(path))


# -- S3 ----------------------------------------------------------------------------------


def _body(data: bytes) -> dict[str, Any]:
    return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ETag": f'"{len(data)}"'}


@pytest.mark.parametrize(
    ("code", "status"),
    [("AccessDenied", 403), ("NoSuchKey", 404), ("SlowDown", 503), ("RequestTimeout", 400)],
)
def test_s3_faults_keep_the_last_good_flags(code: str, status: int) -> None:
    client = boto3.client("s3", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_response("get_object", _body(dump(everywhere(True, version=1))))
    stub.add_client_error("get_object", service_error_code="304", http_status_code=304)
    stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
    stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
    stub.add_response("get_object", _body(dump(everywhere(False, version=2))))
    provider = FlagFileProvider(
        "s3://bucket/flags.json", s3_client=client, min_interval=0, refresh_wait=5
    )
    with stub:
        events = started(provider)
        assert value(provider) is True  # 304: unchanged
        assert value(provider) is True and code in (provider.fault or "")
        assert value(provider) is True
        assert value(provider) is False and provider.fault is None
        stub.assert_no_pending_responses()
    assert [e for e, _ in events] == [
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ProviderEvent.PROVIDER_READY,
    ]


class ExplodingSource(LocalFileSource):
    """A source that fails in a way its contract does not describe."""

    explode = False

    def changed(self) -> bool:
        if self.explode:
            raise KeyError("ETag")
        return super().changed()

    def fetch(self) -> bytes | None:
        if self.explode:
            raise KeyError("ETag")
        return super().fetch()


def test_an_unexpected_source_error_is_a_fault_too(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(dump(everywhere(True)))
    source = ExplodingSource(path, min_interval=0)
    provider = FlagFileProvider(source, refresh_wait=5)
    events = started(provider)
    source.explode = True
    assert value(provider) is True and "ETag" in (provider.fault or "")
    assert [e for e, _ in events] == [ProviderEvent.PROVIDER_ERROR]
