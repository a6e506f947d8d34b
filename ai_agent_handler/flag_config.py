"""Wiring of the flag provider for :data:`~ai_agent_handler.FLAG_DOMAIN`, once per process.

The handler calls :func:`ensure_provider` before its first flag evaluation. When nobody
has registered a provider for the domain (a test, a host using flagd or another vendor
always wins), it registers a :class:`~ai_agent_handler.FlagFileProvider` built from the
settings and waits until the flags are loaded, so the first run is decided on real flags:

* ``rollout_phase`` (else ``$ROLLOUT_PHASE``): ``dev``, ``staging`` or ``production``.
  Unset means ``production``, the most conservative file, and is logged once.
* ``flag_source`` (else ``$FLAG_SOURCE``): path or ``s3://bucket/key`` of the live flag
  file; unset means the phase file shipped in the package. With a live source the shipped
  file is the cold-start fallback.
* ``flag_min_interval`` (else ``$FLAG_MIN_INTERVAL``): seconds between freshness checks
  (default 0.1 for a file, 5 for S3).
* ``flag_bucket_owner`` (else ``$FLAG_BUCKET_OWNER``): account id sent as
  ``ExpectedBucketOwner`` with every S3 read.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openfeature import api

from .flag_provider import FlagFileProvider
from .rollout import FLAG_DOMAIN

__all__ = [
    "DEFAULT_PHASE",
    "PHASES",
    "FlagConfigError",
    "configured_phase",
    "ensure_provider",
    "shipped_flag_file",
]

PHASES = ("dev", "staging", "production")
#: The phase used when none is configured: its shipped file keeps every endpoint legacy.
DEFAULT_PHASE = "production"

_PACKAGE_DIR = Path(__file__).resolve().parent
# An installed wheel ships the phase files as ai_agent_handler/flags/; a source checkout
# (or an editable install) has them in flags/ at the repository root.
_SHIPPED_DIRS = (_PACKAGE_DIR / "flags", _PACKAGE_DIR.parent / "flags")

# Checked without the lock: after the first call, ensure_provider is one global read.
_configured = False
_lock = threading.Lock()


class FlagConfigError(ValueError):
    """A flag setting that cannot work (unknown phase, malformed source or interval)."""


def ensure_provider(setting: Mapping[str, Any], logger: logging.Logger) -> None:
    """Register a :class:`FlagFileProvider` for :data:`FLAG_DOMAIN` once per process.

    Does nothing when a provider is already registered for the domain. Raises
    :class:`FlagConfigError` for an unknown phase or a malformed setting (before anything
    is sent); a flag file that cannot be loaded is logged, never raised.
    """
    global _configured
    if _configured:
        return
    with _lock:
        if _configured:
            return
        _configure(setting, logger)
        _configured = True


def _configure(setting: Mapping[str, Any], logger: logging.Logger) -> None:
    phase = configured_phase(setting)
    # A domain without its own provider falls back to the default one.
    if api.get_client(FLAG_DOMAIN).provider is not api.get_client().provider:
        logger.debug("a provider is already registered for domain %s; keeping it", FLAG_DOMAIN)
        return
    if phase is None:
        logger.warning(
            "no rollout phase configured (setting rollout_phase or $ROLLOUT_PHASE); "
            "using the %s flag file, the most conservative",
            DEFAULT_PHASE,
        )
        phase = DEFAULT_PHASE
    shipped = shipped_flag_file(phase)
    live = _setting(setting, "flag_source", "FLAG_SOURCE")
    try:
        provider = FlagFileProvider(
            live or shipped,
            s3_client=_s3_client(setting) if live and live.startswith("s3://") else None,
            min_interval=_min_interval(setting),
            fallback_path=shipped if live else None,
            expected_bucket_owner=_setting(setting, "flag_bucket_owner", "FLAG_BUCKET_OWNER"),
            logger=logger,
        )
    except ValueError as err:  # a malformed s3:// URI
        raise FlagConfigError(f"flag_source {live!r}: {err}") from err
    try:
        api.set_provider_and_wait(provider, domain=FLAG_DOMAIN)
    except Exception as err:  # initialize() failed even with the fallback: logged there
        logger.error(
            "flag provider for %s not ready (%s); runs use the legacy key until %s is readable",
            FLAG_DOMAIN,
            err,
            provider.source.name,
        )
        return
    logger.info(
        "flag provider for %s: phase %s, source %s, serving version %s from %s",
        FLAG_DOMAIN,
        phase,
        provider.source.name,
        provider.version,
        provider.loaded_from,
    )


def configured_phase(setting: Mapping[str, Any]) -> str | None:
    """``rollout_phase`` (else ``$ROLLOUT_PHASE``), checked; None when unset."""
    phase = _setting(setting, "rollout_phase", "ROLLOUT_PHASE")
    if phase is not None and phase not in PHASES:
        raise FlagConfigError(
            f"unknown rollout phase {phase!r} (rollout_phase / $ROLLOUT_PHASE); "
            f"expected one of: {', '.join(PHASES)}"
        )
    return phase


def shipped_flag_file(phase: str) -> Path:
    """The phase file shipped with the package (``flags/<phase>.flagd.json``)."""
    if phase not in PHASES:
        raise FlagConfigError(
            f"unknown rollout phase {phase!r}; expected one of: {', '.join(PHASES)}"
        )
    name = f"{phase}.flagd.json"
    for directory in _SHIPPED_DIRS:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"shipped flag file {name} not found in {' or '.join(map(str, _SHIPPED_DIRS))}"
    )


def _setting(setting: Mapping[str, Any], key: str, env: str) -> str | None:
    value = setting.get(key)
    if value is None or value == "":
        value = os.environ.get(env)
    return None if value is None or value == "" else str(value)


def _min_interval(setting: Mapping[str, Any]) -> float | None:
    raw = _setting(setting, "flag_min_interval", "FLAG_MIN_INTERVAL")
    if raw is None:
        return None
    try:
        interval = float(raw)
    except ValueError:
        interval = -1.0
    if not interval >= 0:  # also refuses NaN
        raise FlagConfigError(f"flag_min_interval {raw!r} must be a number of seconds >= 0")
    return interval


def _s3_client(setting: Mapping[str, Any]) -> Any:
    from .invoker import _credentials

    credentials = _credentials(setting)
    if not credentials:
        return None  # the source builds a default client on first use
    import boto3

    from .flag_sources import S3_CLIENT_CONFIG

    return boto3.client("s3", config=S3_CLIENT_CONFIG, **credentials)


def _reset_for_tests() -> None:
    """Forget the once-per-process configuration (tests only)."""
    global _configured
    with _lock:
        _configured = False
