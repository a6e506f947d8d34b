"""Finding and reading the configuration that names the phases' live files (:mod:`.config`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..exceptions import FlagConfigError
from .config import CONFIG_ENV, CONFIG_NAME, Live, combined, from_env, from_toml


def find_config(start: Path | None = None) -> Path | None:
    """``ai-agent-rollout.toml`` in ``start`` (default: the current folder) or the nearest
    folder above it; None when there is none (or the current folder is gone)."""
    try:
        here = (start or Path.cwd()).resolve()
    except OSError:
        return None
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def live_files(
    environ: Mapping[str, str] | None = None, start: Path | None = None
) -> dict[str, Live]:
    """The live files named for the phases: ``$AI_AGENT_ROLLOUT_CONFIG`` or the nearest
    ``ai-agent-rollout.toml``, then ``$ROLLOUT_LIVE_<PHASE>`` over it. Raises
    :class:`FlagConfigError` for a configuration that cannot be read or says something wrong."""
    environ = os.environ if environ is None else environ
    named = environ.get(CONFIG_ENV)
    if named == "":
        raise FlagConfigError(f"${CONFIG_ENV} is empty: name the configuration file or unset it")
    path = Path(named) if named else find_config(start)
    in_file: dict[str, Live] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            why = err.strerror if isinstance(err, OSError) and err.strerror else err
            raise FlagConfigError(f"cannot read {path}: {why}") from err
        in_file = from_toml(text, str(path))
    return combined(in_file, from_env(environ))
