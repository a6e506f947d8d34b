"""The providers the handler decides with: one per flag configuration in a process.

The handler calls :func:`flag_domain` before a run's flag evaluation and evaluates with the
OpenFeature client of the domain it returns. When somebody registered their own provider
for :data:`~ai_agent_handler.FLAG_DOMAIN` (a test, a host using flagd or another vendor),
that provider answers for every handler: the answer is :data:`FLAG_DOMAIN`. Otherwise the
library registers a :class:`~ai_agent_handler.FlagFileProvider` built from the handler's
:class:`~ai_agent_handler.settings.FlagConfig` and waits until its flags are loaded, so the
first run is decided on real flags:

* the first configuration of the process gets :data:`FLAG_DOMAIN` itself;
* a handler with another configuration (another ``rollout_phase``, another ``flag_source``)
  gets a provider of its own, on the domain ``ai_agent_handler/<phase>/<n>``, so handlers
  of several phases in one process each decide from their own phase's file.

Per configuration:

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
from openfeature.provider import FeatureProvider

from .. import _aws, settings
from ..settings import FLAG_DOMAIN, FlagConfig
from .provider import FlagFileProvider

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
# An installed wheel ships the phase files as ai_agent_handler/flags/; a source checkout
# (or an editable install) has them in flags/ at the repository root.
_SHIPPED_DIRS = (_PACKAGE_DIR / "flags", _PACKAGE_DIR.parent / "flags")

# configuration -> the domain it decides with. Read without the lock: after a
# configuration's first run, flag_domain is a dict lookup and, off the primary domain, a
# look at the primary domain's provider.
_domains: dict[FlagConfig, str] = {}
# The provider the library registered for FLAG_DOMAIN itself, if any.
_primary: FeatureProvider | None = None
_lock = threading.Lock()
_unset_phase_logged = False


def flag_domain(config: FlagConfig, setting: Mapping[str, Any], logger: logging.Logger) -> str:
    """The OpenFeature domain a handler with ``config`` evaluates the flag with.

    Registers the configuration's :class:`FlagFileProvider` on its first call (``setting``
    gives the S3 credentials, when explicit). A flag file that cannot be loaded is logged,
    never raised.
    """
    domain = _domains.get(config)
    if domain is None:
        with _lock:
            domain = _domains.get(config)
            if domain is None:
                domain = _domains[config] = _configure(config, setting, logger)
    elif domain != FLAG_DOMAIN and _foreign_primary():
        return FLAG_DOMAIN  # registered since: somebody else's provider answers for all
    return domain


def ensure_provider(setting: Mapping[str, Any], logger: logging.Logger) -> str:
    """:func:`flag_domain` for a handler ``setting`` (checked: ``FlagConfigError``)."""
    return flag_domain(settings.flag_config(setting), setting, logger)


def _current(domain: str | None) -> FeatureProvider:
    # A domain without its own provider answers with the default one.
    return api.get_client(domain).provider


def _foreign_primary() -> bool:
    """True when FLAG_DOMAIN's provider is somebody else's, not the library's."""
    provider = _current(FLAG_DOMAIN)
    return provider is not _primary and provider is not _current(None)


def _configure(config: FlagConfig, setting: Mapping[str, Any], logger: logging.Logger) -> str:
    global _primary, _unset_phase_logged
    if _foreign_primary():
        logger.debug("a provider is registered for domain %s; deciding with it", FLAG_DOMAIN)
        return FLAG_DOMAIN
    if config.phase is None and not _unset_phase_logged:
        _unset_phase_logged = True
        logger.warning(
            "no rollout phase configured (setting rollout_phase or $ROLLOUT_PHASE); "
            "using the %s flag file, the most conservative",
            settings.DEFAULT_PHASE,
        )
    phase = config.file_phase
    shipped = shipped_flag_file(phase)
    live = config.source
    s3_live = live is not None and _aws.is_s3_uri(live)
    provider = FlagFileProvider(
        live or shipped,
        # Explicit credentials from the setting; without them the source builds its own
        # client on first use from boto3's chain.
        s3_client=_aws.s3_client(setting, config=_aws.FLAG_READ_CONFIG)
        if s3_live and _aws.credentials(setting)
        else None,
        min_interval=config.min_interval,
        refresh_wait=config.refresh_wait,
        fallback_path=shipped if live else None,
        expected_bucket_owner=config.bucket_owner,
        source_role="live" if live else "shipped",
        logger=logger,
    )
    # The first configuration takes the contract's domain; later ones get their own.
    domain = FLAG_DOMAIN if _primary is None else f"{FLAG_DOMAIN}/{phase}/{len(_domains)}"
    try:
        api.set_provider_and_wait(provider, domain=domain)
    except Exception as err:  # initialize() failed even with the fallback: logged there
        logger.error(
            "flag provider for %s not ready (%s); runs use the legacy key until %s is readable",
            domain,
            err,
            provider.source.name,
        )
    else:
        logger.info(
            "flag provider for %s: phase %s, source %s, serving version %s from %s",
            domain,
            phase,
            provider.source.name,
            provider.version,
            provider.loaded_from,
        )
    if domain == FLAG_DOMAIN:
        _primary = provider
        # Configurations that found somebody else's provider there (since removed) must
        # not decide with this one: they are configured again on their next run.
        for other in [key for key, value in _domains.items() if value == FLAG_DOMAIN]:
            del _domains[other]
    return domain


def shipped_flag_file(phase: str) -> Path:
    """The phase file shipped with the package (``flags/<phase>.flagd.json``)."""
    settings.check_phase(phase)
    name = f"{phase}.flagd.json"
    for directory in _SHIPPED_DIRS:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"shipped flag file {name} not found in {' or '.join(map(str, _SHIPPED_DIRS))}"
    )


def reset() -> None:
    """Forget the configured providers: each configuration is set up again on its next run.

    For tests that clear OpenFeature's providers (``api.clear_providers()``) between
    handlers; the providers themselves stay registered until cleared.
    """
    global _primary, _unset_phase_logged
    with _lock:
        _domains.clear()
        _primary = None
        _unset_phase_logged = False
