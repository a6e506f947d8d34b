"""The handler's settings: the setting first, then the environment; checked in one place."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ai_agent_handler import FlagConfigError, settings


@pytest.mark.parametrize(
    ("setting", "env", "expected"),
    [
        ({}, None, None),
        ({}, "staging", "staging"),
        ({"rollout_phase": "dev"}, "production", "dev"),  # the setting wins
        ({"rollout_phase": ""}, "staging", "staging"),  # empty counts as unset
        ({"rollout_phase": None}, "dev", "dev"),
        ({}, "", None),
    ],
)
def test_rollout_phase_setting_then_environment(
    monkeypatch: pytest.MonkeyPatch, setting: dict[str, Any], env: str | None, expected: str | None
) -> None:
    if env is not None:
        monkeypatch.setenv("ROLLOUT_PHASE", env)
    assert settings.rollout_phase(setting) == expected


@pytest.mark.parametrize("phase", ["Production", "prod", "qa", " dev", "dev\n"])
def test_an_unknown_phase_is_refused_and_named(phase: str) -> None:
    with pytest.raises(FlagConfigError, match="unknown rollout phase") as caught:
        settings.rollout_phase({"rollout_phase": phase})
    assert repr(phase) in str(caught.value) and "dev, staging, production" in str(caught.value)
    assert settings.metric_phase({"rollout_phase": phase}) is None  # never raises


@pytest.mark.parametrize("phase", settings.PHASES)
def test_every_phase_is_accepted(phase: str) -> None:
    assert settings.rollout_phase({"rollout_phase": phase}) == phase
    assert settings.metric_phase({"rollout_phase": phase}) == phase


def test_the_default_phase_is_the_most_conservative() -> None:
    assert settings.DEFAULT_PHASE == "production" == settings.PHASES[-1]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), ("0", 0.0), (0, 0.0), ("0.25", 0.25), (5, 5.0)],
)
def test_flag_min_interval(raw: object, expected: float | None) -> None:
    assert settings.flag_min_interval({"flag_min_interval": raw}) == expected


@pytest.mark.parametrize("key", ["flag_min_interval", "flag_refresh_wait"])
@pytest.mark.parametrize("raw", ["-1", "nan", "NaN", "inf", "soon", "1s", -0.5, math.nan, math.inf])
def test_a_bad_number_of_seconds_is_refused(key: str, raw: object) -> None:
    with pytest.raises(FlagConfigError, match=f"{key} .* must be a finite number"):
        getattr(settings, key)({key: raw})


def test_flag_refresh_wait() -> None:
    assert settings.flag_refresh_wait({}) is None  # the provider's default
    assert settings.flag_refresh_wait({"flag_refresh_wait": "0.25"}) == 0.25


@pytest.mark.parametrize(
    ("function", "key", "env"),
    [
        (settings.flag_source, "flag_source", "FLAG_SOURCE"),
        (settings.flag_bucket_owner, "flag_bucket_owner", "FLAG_BUCKET_OWNER"),
    ],
)
def test_string_settings_fall_back_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, function: Any, key: str, env: str
) -> None:
    assert function({}) is None
    monkeypatch.setenv(env, "from-env")
    assert function({}) == "from-env"
    assert function({key: ""}) == "from-env"
    assert function({key: "from-setting"}) == "from-setting"


def test_the_interval_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAG_MIN_INTERVAL", "2")
    assert settings.flag_min_interval({}) == 2.0
    assert settings.flag_min_interval({"flag_min_interval": 0}) == 0.0  # zero is a value
