"""default_provider: settings -> one FlagFileProvider per process; a long-lived handler reloads."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryProvider

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, FlagConfigError, FlagFileProvider
from ai_agent_handler.flag_file import default_provider
from ai_agent_handler.flag_file.default_provider import ensure_provider, shipped_flag_file
from tests.support import FLAGS_DIR, PHASES, REPO
from tests.support.flags import context, dump, everywhere, rollout, write_atomic

LOG = logging.getLogger("test.default_provider")


def _registered() -> Any:
    return api.get_client(FLAG_DOMAIN).provider


def _value(endpoint: str = "ep") -> bool:
    return api.get_client(FLAG_DOMAIN).get_boolean_value(FLAG_KEY, False, context(endpoint))


@pytest.mark.parametrize(("phase", "expected"), [("dev", True), ("staging", False)])
def test_registers_the_shipped_phase_file(no_provider: None, phase: str, expected: bool) -> None:
    ensure_provider({"rollout_phase": phase}, LOG)
    provider = _registered()
    assert isinstance(provider, FlagFileProvider)
    assert provider.source.name == str(FLAGS_DIR / f"{phase}.flagd.json")
    assert _value() is expected


def test_no_phase_means_production_said_once(
    no_provider: None, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        ensure_provider({}, LOG)
    assert _registered().loaded_from == str(FLAGS_DIR / "production.flagd.json")
    warnings = [r for r in caplog.records if "no rollout phase configured" in r.getMessage()]
    assert len(warnings) == 1 and "production" in warnings[0].getMessage()


@pytest.mark.parametrize("phase", ["prod", "Production", "qa", " dev"])
def test_unknown_phase_is_a_configuration_error(no_provider: None, phase: str) -> None:
    with pytest.raises(FlagConfigError, match="expected one of: dev, staging, production"):
        ensure_provider({"rollout_phase": phase}, LOG)
    assert isinstance(FlagConfigError("x"), ValueError)
    assert not isinstance(_registered(), FlagFileProvider)
    with pytest.raises(FlagConfigError):  # every run, not only the first
        ensure_provider({"rollout_phase": phase}, LOG)


@pytest.mark.parametrize(
    ("setting", "environment", "match"),
    [
        ({"rollout_phase": "canary"}, {}, r"unknown rollout phase .*'canary'; expected one of"),
        ({}, {"ROLLOUT_PHASE": "Production"}, r"'Production' \(did you mean 'production'\?\)"),
        ({"rollout_phase": "stagin"}, {}, r"did you mean 'staging'"),
        ({"partition_key_mode": "compsite"}, {}, r"did you mean 'composite'.*flag, composite"),
        ({"flag_source": "s3://bucket-only"}, {}, "s3://bucket/key"),
    ],
)
def test_bad_flag_settings_are_refused_when_the_handler_is_created(
    no_provider: None,
    make_handler: Any,
    sent: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    setting: dict[str, Any],
    environment: dict[str, str],
    match: str,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(FlagConfigError, match=match):
        make_handler(**setting)
    assert sent == [] and not isinstance(_registered(), FlagFileProvider)


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"flag_source": "s3://bucket-only"}, "s3://bucket/key"),
        ({"flag_min_interval": "soon"}, "flag_min_interval 'soon'"),
        ({"flag_min_interval": -1}, "flag_min_interval '-1'"),
    ],
)
def test_malformed_settings(no_provider: None, setting: dict[str, Any], match: str) -> None:
    with pytest.raises(FlagConfigError, match=match):
        ensure_provider({"rollout_phase": "dev", **setting}, LOG)


def test_a_registered_provider_always_wins(no_provider: None) -> None:
    theirs = InMemoryProvider({})
    api.set_provider_and_wait(theirs, domain=FLAG_DOMAIN)
    ensure_provider({"rollout_phase": "dev"}, LOG)
    assert _registered() is theirs


def test_the_plugin_provider_is_kept(partition_key_flag: Any) -> None:
    default_provider.reset()
    before = _registered()
    ensure_provider({"rollout_phase": "production"}, LOG)
    assert _registered() is before and not isinstance(before, FlagFileProvider)


def test_environment_fallbacks_and_cold_start(
    no_provider: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "live.json"
    monkeypatch.setenv("ROLLOUT_PHASE", "staging")
    monkeypatch.setenv("FLAG_SOURCE", str(live))
    monkeypatch.setenv("FLAG_MIN_INTERVAL", "0")
    ensure_provider({}, LOG)
    provider = _registered()
    assert provider.source.name == str(live)
    assert provider.loaded_from == str(FLAGS_DIR / "staging.flagd.json")  # cold start
    assert _value() is False
    live.write_bytes(dump(everywhere(True)))
    assert _value() is True and provider.loaded_from == str(live)


def test_once_per_process_under_concurrency(
    no_provider: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    registrations: list[Any] = []
    original = api.set_provider_and_wait

    def counting(provider: Any, domain: str | None = None) -> None:
        registrations.append(provider)
        original(provider, domain=domain)

    monkeypatch.setattr(api, "set_provider_and_wait", counting)
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        ensure_provider({"rollout_phase": "dev"}, LOG)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registrations) == 1 and _registered() is registrations[0]


def test_s3_source_with_explicit_credentials(no_provider: None) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="flags")
        s3.put_object(Bucket="flags", Key="staging.json", Body=dump(everywhere(True)))
        setting = {
            "rollout_phase": "staging",
            "flag_source": "s3://flags/staging.json",
            "region_name": "us-east-1",
            "aws_access_key_id": "AKIAFLAGS",
            "aws_secret_access_key": "secret",
        }
        ensure_provider(setting, LOG)
        provider = _registered()
        assert provider.loaded_from == "s3://flags/staging.json"
        assert provider.source.client.meta.region_name == "us-east-1"
        assert _value() is True


def test_long_lived_handler_sees_a_reload_on_its_next_run(
    no_provider: None, tmp_path: Path, make_handler: Any, sent: Any
) -> None:
    path = tmp_path / "staging.json"
    path.write_bytes(dump(rollout(version=1)))
    handler = make_handler(
        rollout_phase="staging", flag_source=str(path), flag_min_interval=0, flag_refresh_wait=5
    )
    handler.invoke_async_funct("f")
    assert sent[-1].payload["endpoint_id"] == "aws-prod"
    assert sent[-1].payload["key_scheme"] == "legacy"

    write_atomic(path, dump(rollout(allow=["aws-prod"], version=2)))
    handler.invoke_async_funct("f")  # same run: the decision is kept
    assert sent[-1].payload["endpoint_id"] == "aws-prod"
    handler.run = {**handler.run, "run_uuid": "run-2"}
    handler.invoke_async_funct("f")
    assert sent[-1].payload["endpoint_id"] == "aws-prod#acme-corp"
    assert sent[-1].payload["key_scheme"] == "composite"
    assert handler.key_decision.flag_set_version == "2"

    write_atomic(path, b"{ half")  # a broken edit keeps the last good flags
    handler.run = {**handler.run, "run_uuid": "run-3"}
    handler.invoke_async_funct("f")
    assert sent[-1].payload["endpoint_id"] == "aws-prod#acme-corp"

    shutil.copy2(FLAGS_DIR / "staging.flagd.json", path)  # rollback to the shipped file
    handler.run = {**handler.run, "run_uuid": "run-4"}
    handler.invoke_async_funct("f")
    assert sent[-1].payload["endpoint_id"] == "aws-prod"
    assert handler.key_decision.flag_set_version == "1"


# -- the shipped files from an installed wheel -------------------------------------------

_FIND = """
from ai_agent_handler.flag_file.default_provider import shipped_flag_file
from ai_agent_handler.settings import PHASES
import ai_agent_handler
print(ai_agent_handler.__file__)
for phase in PHASES:
    print(shipped_flag_file(phase))
"""


def test_shipped_files_are_found_in_the_wheel_layout(tmp_path: Path) -> None:
    # The layout pyproject.toml gives the wheel: flags/ shipped as ai_agent_handler/flags/.
    site = tmp_path / "site-packages"
    shutil.copytree(REPO / "ai_agent_handler", site / "ai_agent_handler")
    shutil.copytree(FLAGS_DIR, site / "ai_agent_handler" / "flags")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{sysconfig.get_paths()['purelib']}"}
    out = subprocess.run(
        [sys.executable, "-S", "-c", _FIND],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out[0] == str(site / "ai_agent_handler" / "__init__.py")
    assert out[1:] == [str(site / "ai_agent_handler" / "flags" / f"{p}.flagd.json") for p in PHASES]


def test_pyproject_ships_the_flags_directory() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "ai_agent_handler.flags" in project["packages"]
    assert project["package-dir"]["ai_agent_handler.flags"] == "flags"
    assert "*.flagd.json" in project["package-data"]["ai_agent_handler.flags"]


def test_shipped_flag_file_refuses_unknown_phases() -> None:
    with pytest.raises(FlagConfigError, match="expected one of"):
        shipped_flag_file("../etc/passwd")
