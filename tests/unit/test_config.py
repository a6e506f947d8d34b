"""The phases' live files named once (:mod:`ai_agent_handler.ops.config`): what a
configuration file and the environment say, and which wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_agent_handler.exceptions import FlagConfigError
from ai_agent_handler.ops import config, config_io
from ai_agent_handler.ops.config import Live

PATH = "/ops/ai-agent-rollout.toml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("[live]\n", {}),
        ('[live]\ndev = "none"\n', {"dev": None}),
        ('[live]\nstaging = "live/s.json"\n', {"staging": "/ops/live/s.json"}),
        ('[live]\nstaging = "/abs/s.json"\n', {"staging": "/abs/s.json"}),
        ('[live]\nproduction = "s3://b/k.json"\n', {"production": "s3://b/k.json"}),
        ('[live]\nproduction = "S3://b/k.json"\n', {"production": "S3://b/k.json"}),
    ],
)
def test_a_configuration_names_live_files(text: str, expected: dict[str, str | None]) -> None:
    found = config.from_toml(text, PATH)
    assert {phase: live.source for phase, live in found.items()} == expected
    assert all(live.named_by == PATH for live in found.values())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[live", "not valid TOML"),
        ('[live]\nproduction = " x"\n', "surrounding whitespace"),
        ('[live]\nproduction = ""\n', "live.production must be a path"),
        ("[live]\nproduction = true\n", "live.production must be a path"),
        ('[live]\nProduction = "x"\n', "[live]: unknown phase 'Production' (did you mean"),
        ('[metrics]\nnamespace = "x"\n', "unknown table or key 'metrics'"),
        ('live = "x"\n', "live must be a table"),
    ],
)
def test_a_wrong_configuration_says_what_and_where(text: str, message: str) -> None:
    with pytest.raises(FlagConfigError) as raised:
        config.from_toml(text, PATH)
    assert str(raised.value).startswith(f"{PATH}: ") and message in str(raised.value)


def test_the_environment_wins_phase_by_phase() -> None:
    in_file = config.from_toml('[live]\ndev = "none"\nstaging = "a.json"\n', PATH)
    in_env = config.from_env({"ROLLOUT_LIVE_STAGING": "b.json", "ROLLOUT_LIVE_PRODUCTION": "none"})
    assert config.combined(in_file, in_env) == {
        "dev": Live("dev", None, PATH),
        "staging": Live("staging", "b.json", "$ROLLOUT_LIVE_STAGING"),
        "production": Live("production", None, "$ROLLOUT_LIVE_PRODUCTION"),
    }
    with pytest.raises(FlagConfigError, match=r"\$ROLLOUT_LIVE_DEV is empty"):
        config.from_env({"ROLLOUT_LIVE_DEV": ""})


def test_the_configuration_is_found_from_a_folder_below(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / config.CONFIG_NAME).write_text('[live]\nproduction = "p.json"\n')
    found = config_io.live_files({}, tmp_path / "a" / "b")
    assert found["production"].source == str(tmp_path / "p.json")
    other = tmp_path / "other.toml"
    other.write_text('[live]\nstaging = "s.json"\n')
    named = config_io.live_files({config.CONFIG_ENV: str(other)}, tmp_path / "a")
    assert list(named) == ["staging"]
    with pytest.raises(FlagConfigError, match="cannot read"):
        config_io.live_files({config.CONFIG_ENV: str(tmp_path / "missing.toml")}, tmp_path)
