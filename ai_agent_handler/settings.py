"""The handler's flag settings and their environment fallbacks, read and checked here only.

Each setting is taken from the handler's ``setting`` first, then from the environment; an
empty value counts as unset.

=====================  =====================  ==============================================
setting                environment            meaning
=====================  =====================  ==============================================
``rollout_phase``      ``ROLLOUT_PHASE``      ``dev``, ``staging`` or ``production``
``flag_source``        ``FLAG_SOURCE``        path or ``s3://bucket/key`` of the live file
``flag_min_interval``  ``FLAG_MIN_INTERVAL``  seconds between two freshness checks
``flag_refresh_wait``  ``FLAG_REFRESH_WAIT``  seconds a run waits for a due check (file 0.005,
                                             S3 0.25)
``flag_bucket_owner``  ``FLAG_BUCKET_OWNER``  account id sent as ``ExpectedBucketOwner``
``partition_key_mode`` ``PARTITION_KEY_MODE`` ``flag`` (the flag decides) or ``composite``
=====================  =====================  ==============================================

A handler reads them once, when it is created (:func:`flag_config`): an unknown phase or a
malformed value raises :class:`~ai_agent_handler.FlagConfigError` there, before the handler
exists, with the valid values in the message.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from .exceptions import FlagConfigError

#: The boolean flag that chooses the key a run sends.
FLAG_KEY: Final = "composite-partition-key"
#: The OpenFeature domain whose client the handler evaluates :data:`FLAG_KEY` with.
FLAG_DOMAIN: Final = "ai_agent_handler"

#: The rollout phases, in the order a change goes through them.
PHASES = ("dev", "staging", "production")
#: The phase used when none is configured: its shipped file keeps every endpoint legacy.
DEFAULT_PHASE = "production"

#: ``partition_key_mode``: the flag decides each run's key (the migration's default) ...
FLAG_MODE: Final = "flag"
#: ... or every run sends ``endpoint_id#part_id`` and the flag is not asked: the end of the
#: migration, before the flag code is removed. A run without ``part_id`` is refused.
COMPOSITE_MODE: Final = "composite"
_MODES = (FLAG_MODE, COMPOSITE_MODE)

PartitionKeyMode = Literal["flag", "composite"]


@dataclass(frozen=True, slots=True)
class FlagConfig:
    """A handler's flag settings, read and checked once (:func:`flag_config`).

    Two handlers with equal configurations share one provider; different ones (another
    phase, another live file) each decide from their own.
    """

    #: The configured phase; None when unset (the production file is used).
    phase: str | None
    #: The live flag file (path or ``s3://`` URI); None: the shipped phase file.
    source: str | None
    min_interval: float | None
    refresh_wait: float | None
    bucket_owner: str | None
    #: ``flag`` or ``composite``.
    mode: PartitionKeyMode = FLAG_MODE

    @property
    def file_phase(self) -> str:
        """The phase whose shipped file is served or used as the fallback."""
        return self.phase or DEFAULT_PHASE


def flag_config(setting: Mapping[str, Any]) -> FlagConfig:
    """Every flag setting of a handler, checked; raises ``FlagConfigError`` naming the bad one."""
    from . import _aws

    source = flag_source(setting)
    if source is not None and _aws.is_s3_uri(source):
        _aws.parse_s3_uri(source)  # a malformed URI is refused here, not at the first run
    return FlagConfig(
        phase=rollout_phase(setting),
        source=source,
        min_interval=flag_min_interval(setting),
        refresh_wait=flag_refresh_wait(setting),
        bucket_owner=flag_bucket_owner(setting),
        mode=partition_key_mode(setting),
    )


def check_phase(name: str, where: str = "rollout phase") -> str:
    """``name`` when it is a phase; else ``FlagConfigError`` listing the phases (and the
    nearest one when the name looks like a typo of it)."""
    if name in PHASES:
        return name
    raise FlagConfigError(
        f"unknown {where} {name!r}{_did_you_mean(name, PHASES)}; "
        f"expected one of: {', '.join(PHASES)}"
    )


def _did_you_mean(name: str, choices: tuple[str, ...]) -> str:
    folded = {choice.lower(): choice for choice in choices}
    near = difflib.get_close_matches(name.strip().lower(), list(folded), n=1, cutoff=0.6)
    return f" (did you mean {folded[near[0]]!r}?)" if near else ""


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
    if phase is None:
        return None
    return check_phase(phase, "rollout phase (rollout_phase / $ROLLOUT_PHASE)")


def partition_key_mode(setting: Mapping[str, Any]) -> PartitionKeyMode:
    """``partition_key_mode`` (else ``$PARTITION_KEY_MODE``): ``flag`` (default) or
    ``composite``; anything else raises :class:`~ai_agent_handler.FlagConfigError`."""
    mode = setting_or_env(setting, "partition_key_mode", "PARTITION_KEY_MODE")
    if mode is None or mode == FLAG_MODE:
        return FLAG_MODE
    if mode == COMPOSITE_MODE:
        return COMPOSITE_MODE
    raise FlagConfigError(
        f"unknown partition_key_mode {mode!r} (partition_key_mode / $PARTITION_KEY_MODE)"
        f"{_did_you_mean(mode, _MODES)}; expected one of: {', '.join(_MODES)}"
    )


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
