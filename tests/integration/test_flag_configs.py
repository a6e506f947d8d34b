"""Flag configurations in one process, where the flags came from, and the end-of-migration mode.

* Handlers of several phases (or live files) in one process each decide from their own
  phase's file; equal configurations share one provider; a provider somebody registered for
  the domain answers for all of them.
* Every decision record says which source answered: the live file, the shipped file (no
  live source configured), or the shipped file as a cold-start fallback, and why.
* ``partition_key_mode = composite`` sends the composite key without asking the flag and
  refuses a run without ``part_id``; ``flag`` (the default) lets the flag decide again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, FlagFileProvider, PartitionKeyError
from ai_agent_handler.decision import VARIANTS
from ai_agent_handler.decision_log import DECISION_LOGGER
from tests.support import FLAGS_DIR
from tests.support.aws import EmfCapture
from tests.support.flags import dump, everywhere, write_atomic


def _records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == DECISION_LOGGER]


def _new_run(handler: Any, run_uuid: str) -> None:
    handler.run = {**handler.run, "run_uuid": run_uuid}


def _registrations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, Any]]:
    seen: list[tuple[str | None, Any]] = []
    original = api.set_provider_and_wait

    def recording(provider: Any, domain: str | None = None) -> None:
        seen.append((domain, provider))
        original(provider, domain=domain)

    monkeypatch.setattr(api, "set_provider_and_wait", recording)
    return seen


# -- several configurations in one process ---------------------------------------------------
def test_handlers_of_different_phases_each_decide_from_their_own_file(
    no_provider: None,
    tmp_path: Path,
    make_handler: Any,
    sent: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered = _registrations(monkeypatch)
    production, dev = tmp_path / "production.json", tmp_path / "dev.json"
    production.write_bytes(dump(everywhere(False, version=4)))
    dev.write_bytes(dump(everywhere(True, version=9)))
    prod_handler = make_handler(rollout_phase="production", flag_source=str(production))
    dev_handler = make_handler(rollout_phase="dev", flag_source=str(dev))
    shipped_dev = make_handler(rollout_phase="dev")  # no live file: the shipped dev file
    again = make_handler(rollout_phase="production", flag_source=str(production))

    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        for handler in (prod_handler, dev_handler, shipped_dev, again):
            handler.invoke_async_funct("f")

    assert [(c.payload["endpoint_id"], c.payload["key_scheme"]) for c in sent] == [
        ("aws-prod", "legacy"),
        ("aws-prod#acme-corp", "composite"),
        ("aws-prod#acme-corp", "composite"),  # the shipped dev file is composite
        ("aws-prod", "legacy"),
    ]
    records = _records(caplog)
    assert [(r["phase"], r["flag_set_version"], r["flag_source"]) for r in records] == [
        ("production", "4", "live"),
        ("dev", "9", "live"),
        ("dev", "1", "shipped"),
        ("production", "4", "live"),
    ]
    # Three configurations, three providers; the first owns the contract's domain.
    assert [domain for domain, _ in registered] == [
        FLAG_DOMAIN,
        f"{FLAG_DOMAIN}/dev/1",
        f"{FLAG_DOMAIN}/dev/2",
    ]
    assert [p.source.name for _, p in registered] == [
        str(production),
        str(dev),
        str(FLAGS_DIR / "dev.flagd.json"),
    ]


def test_a_change_of_one_phase_file_moves_only_that_phases_handlers(
    no_provider: None, tmp_path: Path, make_handler: Any, sent: Any
) -> None:
    staging, production = tmp_path / "staging.json", tmp_path / "production.json"
    staging.write_bytes(dump(everywhere(False, version=2)))
    production.write_bytes(dump(everywhere(False, version=2)))
    fast = {"flag_min_interval": 0, "flag_refresh_wait": 5}
    stg = make_handler(rollout_phase="staging", flag_source=str(staging), **fast)
    prd = make_handler(rollout_phase="production", flag_source=str(production), **fast)
    stg.invoke_async_funct("f")
    prd.invoke_async_funct("f")
    write_atomic(staging, dump(everywhere(True, version=3)))
    _new_run(stg, "run-2")
    _new_run(prd, "run-2")
    stg.invoke_async_funct("f")
    prd.invoke_async_funct("f")
    assert [c.payload["key_scheme"] for c in sent] == ["legacy", "legacy", "composite", "legacy"]


def test_a_provider_registered_for_the_domain_answers_for_every_phase(
    no_provider: None, tmp_path: Path, make_handler: Any, sent: Any
) -> None:
    dev = tmp_path / "dev.json"
    dev.write_bytes(dump(everywhere(True)))
    make_handler(rollout_phase="production").invoke_async_funct("f")
    make_handler(rollout_phase="dev", flag_source=str(dev)).invoke_async_funct("f")
    assert [c.payload["key_scheme"] for c in sent] == ["legacy", "composite"]

    flag = InMemoryFlag("legacy", VARIANTS)  # a host's own provider, e.g. flagd
    api.set_provider_and_wait(InMemoryProvider({FLAG_KEY: flag}), domain=FLAG_DOMAIN)
    make_handler(rollout_phase="dev", flag_source=str(dev)).invoke_async_funct("f")
    make_handler(rollout_phase="staging").invoke_async_funct("f")
    assert [c.payload["key_scheme"] for c in sent[2:]] == ["legacy", "legacy"]


# -- which source answered -------------------------------------------------------------------
def test_the_decision_record_says_which_source_answered_and_why(
    no_provider: None,
    tmp_path: Path,
    make_handler: Any,
    sent: Any,
    caplog: pytest.LogCaptureFixture,
    emf: EmfCapture,
) -> None:
    live = tmp_path / "missing" / "production.json"
    handler = make_handler(
        rollout_phase="production",
        flag_source=str(live),
        flag_min_interval=0,
        flag_refresh_wait=5,
    )
    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        handler.invoke_async_funct("f")  # cold start: the live file does not exist
        live.parent.mkdir()
        live.write_bytes(dump(everywhere(True, version=12)))
        _new_run(handler, "run-2")
        handler.invoke_async_funct("f")
        write_atomic(live, b"{ half")  # a broken edit: the last good live flags, stale
        _new_run(handler, "run-3")
        handler.invoke_async_funct("f")

    fields = [
        (r["flag_source"], r["flag_set_version"], r["flag_source_fault"]) for r in _records(caplog)
    ]
    assert fields[0][:2] == ("fallback", "1")
    assert fields[0][2] == f"{live}: no such file"
    assert fields[1] == ("live", "12", None)
    assert fields[2][:2] == ("live", "12") and "invalid JSON at line 1" in fields[2][2]
    decision = handler.key_decision
    assert (decision.flag_source, decision.flag_set_version) == ("live", "12")
    assert decision.flag_source_fault == fields[2][2]
    assert [doc["flag_source"] for doc in emf.documents()] == ["fallback", "live", "live"]


def test_a_provider_reports_what_it_serves(tmp_path: Path) -> None:
    live = tmp_path / "live.json"
    provider = FlagFileProvider(live, fallback_path=FLAGS_DIR / "staging.flagd.json")
    provider.initialize(None)  # type: ignore[arg-type]
    assert provider.serving["flag_source"] == "fallback"
    shipped = FlagFileProvider(FLAGS_DIR / "staging.flagd.json", source_role="shipped")
    shipped.initialize(None)  # type: ignore[arg-type]
    assert shipped.serving == {"flag_source": "shipped"}


# -- the end of the migration: the composite key, unconditionally -----------------------------
@pytest.mark.parametrize("where", ["setting", "environment"])
def test_composite_mode_sends_the_composite_key_whatever_the_flag_says(
    partition_key_flag: Any,
    make_handler: Any,
    sent: Any,
    caplog: pytest.LogCaptureFixture,
    emf: EmfCapture,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    partition_key_flag.legacy()  # the flag says legacy everywhere
    setting = {"partition_key_mode": "composite"} if where == "setting" else {}
    if where == "environment":
        monkeypatch.setenv("PARTITION_KEY_MODE", "composite")
    handler = make_handler(rollout_phase="production", **setting)
    with caplog.at_level(logging.INFO, logger=DECISION_LOGGER):
        handler.invoke_async_funct("f")
        handler.send_data_to_stream(index=0, chunk_delta="x")
    assert [(c.payload["endpoint_id"], c.payload["key_scheme"]) for c in sent] == [
        ("aws-prod#acme-corp", "composite")
    ] * 2
    (record,) = _records(caplog)
    assert record["flag_source"] == "setting" and record["reason"] == "STATIC"
    assert record["variant"] == "composite" and record["error_code"] is None
    assert emf.total("KeyDecisions", phase="production", key_scheme="composite") == 1


def test_composite_mode_refuses_a_run_without_part_id_before_sending(
    partition_key_flag: Any, make_handler: Any, sent: Any
) -> None:
    handler = make_handler(part_id=None, partition_key_mode="composite")
    with pytest.raises(PartitionKeyError, match=r"part_id is required.*partition_key_mode"):
        handler.invoke_async_funct("f")
    with pytest.raises(PartitionKeyError, match="endpoint_id"):  # the id's own error first
        make_handler(endpoint_id="a#b", partition_key_mode="composite").invoke_async_funct("f")
    assert sent == []


def test_flag_mode_is_the_rollback_of_composite_mode(
    partition_key_flag: Any, make_handler: Any, sent: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    partition_key_flag.legacy()
    monkeypatch.setenv("PARTITION_KEY_MODE", "composite")
    make_handler().invoke_async_funct("f")
    monkeypatch.setenv("PARTITION_KEY_MODE", "flag")  # the next handler: the flag decides
    make_handler().invoke_async_funct("f")
    monkeypatch.delenv("PARTITION_KEY_MODE")
    make_handler().invoke_async_funct("f")
    assert [c.payload["key_scheme"] for c in sent] == ["composite", "legacy", "legacy"]
