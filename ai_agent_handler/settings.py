"""The handler's flag settings and their environment fallbacks, read and checked here only.

Each setting is taken from the handler's ``setting`` first, then from the environment; an
empty value counts as unset.

=====================  =====================  ==============================================
setting                environment            meaning
=====================  =====================  ==============================================
``rollout_phase``      ``ROLLOUT_PHASE``      ``dev``, ``staging`` or ``production``
``flag_source``        ``FLAG_SOURCE``        path or ``s3://bucket/key`` of the live file
``flag_min_interval``  ``FLAG_MIN_INTERVAL``  seconds between two freshness checks
``flag_refresh_wait``  ``FLAG_REFRESH_WAIT``  seconds a run waits for a due check (0.005)
``flag_bucket_owner``  ``FLAG_BUCKET_OWNER``  account id sent as ``ExpectedBucketOwner``
=====================  =====================  ==============================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from .exceptions import FlagConfigError

__all__ = [
    "DEFAULT_PHASE",
    "PHASES",
    "flag_bucket_owner",
    "flag_min_interval",
    "flag_refresh_wait",
    "flag_source",
    "metric_phase",
    "rollout_phase",
    "setting_or_env",
]

#: The rollout phases, in the order a change goes through them.
PHASES = ("dev", "staging", "production")
#: The phase used when none is configured: its shipped file keeps every endpoint legacy.
DEFAULT_PHASE = "production"


def setting_or_env(setting: Mapping[str, Any], key: str, env: str) -> str | None:
    """``setting[key]``, else ``$env``, as a string; None when both are unset or empty."""
    value = setting.get(key)
    if value is None or value == "":
        value = os.environ.get(env)
    return None if value is None or value == "" else str(value)


def rollout_phase(setting: Mapping[str, Any]) -> str | None:
    """``rollout_phase`` (else ``$ROLLOUT_PHASE``); None when unset.

    Raises :class:`~ai_agent_handler.FlagConfigError` for a name that is not a phase.
    """
    phase = setting_or_env(setting, "rollout_phase", "ROLLOUT_PHASE")
    if phase is not None and phase not in PHASES:
        raise FlagConfigError(
            f"unknown rollout phase {phase!r} (rollout_phase / $ROLLOUT_PHASE); "
            f"expected one of: {', '.join(PHASES)}"
        )
    return phase


def metric_phase(setting: Mapping[str, Any]) -> str | None:
    """The phase to label a metric with: :func:`rollout_phase`, None when it is invalid.

    Error paths use it: counting a failure must not raise a second, unrelated error.
    """
    try:
        return rollout_phase(setting)
    except FlagConfigError:
        return None


def flag_source(setting: Mapping[str, Any]) -> str | None:
    """``flag_source`` (else ``$FLAG_SOURCE``): where the live flag file is; None: shipped."""
    return setting_or_env(setting, "flag_source", "FLAG_SOURCE")


def flag_bucket_owner(setting: Mapping[str, Any]) -> str | None:
    """``flag_bucket_owner`` (else ``$FLAG_BUCKET_OWNER``)."""
    return setting_or_env(setting, "flag_bucket_owner", "FLAG_BUCKET_OWNER")


def flag_min_interval(setting: Mapping[str, Any]) -> float | None:
    """``flag_min_interval`` (else ``$FLAG_MIN_INTERVAL``) in seconds; None: the default.

    Raises :class:`~ai_agent_handler.FlagConfigError` unless it is a finite number >= 0.
    """
    return _seconds(setting, "flag_min_interval", "FLAG_MIN_INTERVAL")


def flag_refresh_wait(setting: Mapping[str, Any]) -> float | None:
    """``flag_refresh_wait`` (else ``$FLAG_REFRESH_WAIT``) in seconds; None: the default.

    How long a run waits for a due flag-source check before deciding on the flags it
    has. Raises :class:`~ai_agent_handler.FlagConfigError` unless it is a finite number >= 0.
    """
    return _seconds(setting, "flag_refresh_wait", "FLAG_REFRESH_WAIT")


def _seconds(setting: Mapping[str, Any], key: str, env: str) -> float | None:
    raw = setting_or_env(setting, key, env)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not (seconds >= 0 and math.isfinite(seconds)):  # also refuses NaN and inf
        raise FlagConfigError(f"{key} {raw!r} must be a finite number of seconds >= 0")
    return seconds
