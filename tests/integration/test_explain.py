"""``explain`` says what the handler really sends: compared with the keys sent to moto."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openfeature import api

from ai_agent_handler import FLAG_DOMAIN, FlagFileProvider
from tests.support.aws import LambdaCapture
from tests.support.cli import Runner, copy_phase_files

ENDPOINTS = [f"aws-{region}-{i:03d}" for region in ("us", "eu") for i in range(100)]
ALLOWED = ["aws-eu-007", "aws-us-042", "aws-us-099"]
PERCENT = 30


@pytest.fixture
def production_rolled_out(tmp_path: Path, run: Runner) -> Path:
    """The production file at 30 % with three endpoints allow-listed."""
    path = copy_phase_files(tmp_path / "flags")["production"]
    assert run("--file", str(path), "percent", str(PERCENT)).code == 0
    assert run("--file", str(path), "allow", *ALLOWED).code == 0
    return path


def explain(run: Runner, path: Path, endpoint: str, part_id: str | None) -> dict[str, Any]:
    argv = ["--file", str(path), "--json", "explain", "--endpoint", endpoint]
    if part_id:
        argv += ["--part-id", part_id]
    result = run(*argv)
    assert result.code == 0, result.err
    body: dict[str, Any] = result.json()
    return body


def test_explain_agrees_with_the_handler_for_200_endpoints(
    run: Runner, production_rolled_out: Path, make_handler: Any, sent: LambdaCapture
) -> None:
    api.set_provider_and_wait(FlagFileProvider(str(production_rolled_out)), domain=FLAG_DOMAIN)
    handler = make_handler(rollout_phase="production")
    for i, endpoint in enumerate(ENDPOINTS):
        part_id = None if i % 10 == 0 else f"tenant-{i}"
        handler.endpoint_id = endpoint
        handler.part_id = part_id
        handler.run = {"run_uuid": f"run-{i}", "updated_by": "t", "thread": {"thread_uuid": "t"}}
        handler.invoke_async_funct("insert_update_run", status="in_progress")
        wire = sent[-1].payload
        said = explain(run, production_rolled_out, endpoint, part_id)
        assert (said["routing_key"], said["key_scheme"]) == (
            wire["endpoint_id"],
            wire["key_scheme"],
        )
        if endpoint in ALLOWED:
            assert said["rule"].startswith("allow-list")
            assert said["flag_value"] is True
        else:
            # The threshold explain gives is consistent with the decision at this percentage.
            assert said["flag_value"] is (said["composite_from_percent"] <= PERCENT)
    composite = [s for s in sent if s.payload["key_scheme"] == "composite"]
    assert 0.15 * len(ENDPOINTS) < len(composite) < 0.5 * len(ENDPOINTS)


@pytest.mark.parametrize(
    ("edit", "endpoint", "key", "rule"),
    [
        ([], "aws-eu-007", "aws-eu-007#acme", "allow-list"),
        (["rollback"], "aws-eu-007", "aws-eu-007", "percentage: 0 %"),
        (["set", "composite"], "aws-us-001", "aws-us-001#acme", "percentage: 100 %"),
    ],
)
def test_explain_text_names_key_and_rule(
    run: Runner, production_rolled_out: Path, edit: list[str], endpoint: str, key: str, rule: str
) -> None:
    if edit:
        assert run("--file", str(production_rolled_out), *edit).code == 0
    result = run(
        "--file", str(production_rolled_out), "explain", "--endpoint", endpoint, "--part-id", "acme"
    )
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(f"endpoint {endpoint}, part_id acme, phase production")
    assert lines[1].split()[:2] == ["key", key]
    assert rule in result.out


def test_explain_of_a_disabled_flag_says_legacy(run: Runner, production_rolled_out: Path) -> None:
    doc = json.loads(production_rolled_out.read_text())
    doc["flags"]["composite-partition-key"]["state"] = "DISABLED"
    production_rolled_out.write_text(json.dumps(doc))
    said = explain(run, production_rolled_out, "aws-eu-007", "acme")
    assert said["routing_key"] == "aws-eu-007"
    assert said["reason"] == "DISABLED"
    assert "DISABLED" in said["rule"]


def test_explain_leaves_the_handlers_provider_alone(
    run: Runner, production_rolled_out: Path
) -> None:
    before = api.get_client(FLAG_DOMAIN).provider
    explain(run, production_rolled_out, "aws-eu-007", None)
    assert api.get_client(FLAG_DOMAIN).provider is before
