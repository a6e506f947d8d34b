"""The phases' live flag files, named once (pure: :mod:`.config_io` finds and reads them).

A fleet reads its phase's live file (``FLAG_SOURCE``: a path or ``s3://bucket/key``). The
operators' commands that look at the rollout (``status``, ``history``, ``report``,
``ramp status``, ``retire-check``) take the same files without ``--file`` once they are
named in one of two places, the environment winning over the file for a phase:

* ``ai-agent-rollout.toml`` in the current folder or one above it (the first found; or the
  file ``$AI_AGENT_ROLLOUT_CONFIG`` names)::

      [live]
      dev = "none"                                   # the dev fleet reads its shipped file
      staging = "s3://ops-flags/ai-agent/staging.flagd.json"
      production = "s3://ops-flags/ai-agent/production.flagd.json"

  A relative path is relative to the folder of the configuration file.
* ``ROLLOUT_LIVE_DEV``, ``ROLLOUT_LIVE_STAGING``, ``ROLLOUT_LIVE_PRODUCTION``: the same
  values, one variable per phase (a relative path: relative to the current folder).

``none`` says the phase's fleet has no live file (it reads the file shipped with the
package). A phase named nowhere is not named: the commands fall back to the phase file
(``flags/<phase>.flagd.json`` of the checkout, else the installed copy).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ..exceptions import FlagConfigError
from ..settings import PHASES, check_phase

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The configuration file's name, looked for in the current folder and the ones above it.
CONFIG_NAME = "ai-agent-rollout.toml"
#: A variable naming the configuration file (instead of looking for it).
CONFIG_ENV = "AI_AGENT_ROLLOUT_CONFIG"
#: ``ROLLOUT_LIVE_<PHASE>``: a phase's live file from the environment.
ENV_PREFIX = "ROLLOUT_LIVE_"
#: The value saying a phase's fleet has no live file.
NONE = "none"


@dataclass(frozen=True)
class Live:
    """One phase's live file (``source`` None: the fleet has none) and where it was named
    (a configuration file's path, or ``$ROLLOUT_LIVE_<PHASE>``)."""

    phase: str
    source: str | None
    named_by: str


def env_name(phase: str) -> str:
    return f"{ENV_PREFIX}{phase.upper()}"


def from_toml(text: str, path: str) -> dict[str, Live]:
    """The live files a configuration file at ``path`` names; :class:`FlagConfigError`
    naming the file and what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FlagConfigError(f"{path}: not valid TOML: {err}") from err
    unknown = sorted(set(data) - {"live"})
    if unknown:
        raise FlagConfigError(
            f"{path}: unknown table or key {unknown[0]!r}; expected [live] with "
            f'{", ".join(PHASES)} = "PATH|s3://BUCKET/KEY|none"'
        )
    table: Any = data.get("live", {})
    if not isinstance(table, dict):
        raise FlagConfigError(f"{path}: live must be a table ([live])")
    base = PurePath(path).parent
    found = {}
    for phase, value in table.items():
        try:
            check_phase(phase, "phase")
        except FlagConfigError as err:
            raise FlagConfigError(f"{path}: [live]: {err}") from None
        found[phase] = Live(phase, _value(value, f"{path}: live.{phase}", base), path)
    return found


def from_env(environ: Mapping[str, str]) -> dict[str, Live]:
    """The live files ``ROLLOUT_LIVE_<PHASE>`` variables name (set and not empty)."""
    found = {}
    for phase in PHASES:
        name = env_name(phase)
        value = environ.get(name)
        if value is None:
            continue
        if value == "":
            raise FlagConfigError(
                f"${name} is empty: set it to PATH, s3://BUCKET/KEY or none, or unset it"
            )
        found[phase] = Live(phase, _value(value, f"${name}", None), f"${name}")
    return found


def combined(*sources: Mapping[str, Live]) -> dict[str, Live]:
    """The live files of the phases, a later source winning over an earlier one; in phase
    order."""
    merged: dict[str, Live] = {}
    for source in sources:
        merged.update(source)
    return {phase: merged[phase] for phase in PHASES if phase in merged}


def _value(value: object, what: str, base: PurePath | None) -> str | None:
    if not isinstance(value, str) or not value.strip():
        raise FlagConfigError(f"{what} must be a path, an s3://BUCKET/KEY URI or none")
    if value != value.strip():
        raise FlagConfigError(f"{what} has surrounding whitespace: {value!r}")
    if value == NONE:
        return None
    if "://" in value or value.lower().startswith("s3:") or base is None:
        return value
    return str(base / value)
