"""The provider of :data:`~ai_agent_handler.FLAG_DOMAIN`, registered once per process.

The handler calls :func:`ensure_provider` before its first flag evaluation. When nobody
has registered a provider for the domain (a test, a host using flagd or another vendor
always wins), it registers a :class:`~ai_agent_handler.FlagFileProvider` built from the
settings (:mod:`ai_agent_handler.settings`) and waits until the flags are loaded, so the
first run is decided on real flags:

* ``rollout_phase``: unset means ``production``, the most conservative file, and is logged.
* ``flag_source``: the live flag file; unset means the phase file shipped in the package.
  With a live source the shipped file is the cold-start fallback.
* ``flag_min_interval``, ``flag_refresh_wait`` and ``flag_bucket_owner`` are passed to the
  provider.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openfeature import api

from .. import _aws, settings
from ..decision import FLAG_DOMAIN
from ..exceptions import FlagConfigError
from .provider import DEFAULT_REFRESH_WAIT, FlagFileProvider

__all__ = ["ensure_provider", "shipped_flag_file"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# An installed wheel ships the phase files as ai_agent_handler/flags/; a source checkout
# (or an editable install) has them in flags/ at the repository root.
_SHIPPED_DIRS = (_PACKAGE_DIR / "flags", _PACKAGE_DIR.parent / "flags")

# Checked without the lock: after the first call, ensure_provider is one global read.
_configured = False
_lock = threading.Lock()


def ensure_provider(setting: Mapping[str, Any], logger: logging.Logger) -> None:
    """Register a :class:`FlagFileProvider` for :data:`FLAG_DOMAIN` once per process.

    Does nothing when a provider is already registered for the domain. Raises
    :class:`~ai_agent_handler.FlagConfigError` for an unknown phase or a malformed setting
    (before anything is sent); a flag file that cannot be loaded is logged, never raised.
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
    phase = settings.rollout_phase(setting)
    # A domain without its own provider falls back to the default one.
    if api.get_client(FLAG_DOMAIN).provider is not api.get_client().provider:
        logger.debug("a provider is already registered for domain %s; keeping it", FLAG_DOMAIN)
        return
    if phase is None:
        logger.warning(
            "no rollout phase configured (setting rollout_phase or $ROLLOUT_PHASE); "
            "using the %s flag file, the most conservative",
            settings.DEFAULT_PHASE,
        )
        phase = settings.DEFAULT_PHASE
    shipped = shipped_flag_file(phase)
    live = settings.flag_source(setting)
    s3_live = live is not None and _aws.is_s3_uri(live)
    provider = FlagFileProvider(
        live or shipped,
        # Explicit credentials from the setting; without them the source builds its own
        # client on first use from boto3's chain.
        s3_client=_aws.s3_client(setting, config=_aws.FLAG_READ_CONFIG)
        if s3_live and _aws.credentials(setting)
        else None,
        min_interval=settings.flag_min_interval(setting),
        refresh_wait=_or_default(settings.flag_refresh_wait(setting), DEFAULT_REFRESH_WAIT),
        fallback_path=shipped if live else None,
        expected_bucket_owner=settings.flag_bucket_owner(setting),
        logger=logger,
    )
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


def _or_default(value: float | None, default: float) -> float:
    return default if value is None else value


def shipped_flag_file(phase: str) -> Path:
    """The phase file shipped with the package (``flags/<phase>.flagd.json``)."""
    if phase not in settings.PHASES:
        raise FlagConfigError(
            f"unknown rollout phase {phase!r}; expected one of: {', '.join(settings.PHASES)}"
        )
    name = f"{phase}.flagd.json"
    for directory in _SHIPPED_DIRS:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"shipped flag file {name} not found in {' or '.join(map(str, _SHIPPED_DIRS))}"
    )


def _reset_for_tests() -> None:
    """Forget the once-per-process configuration (tests only)."""
    global _configured
    with _lock:
        _configured = False
