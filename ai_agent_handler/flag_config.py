"""Wiring of the flag provider for :data:`~ai_agent_handler.FLAG_DOMAIN` (filled in by the flag-provider work)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any


def ensure_provider(setting: Mapping[str, Any], logger: logging.Logger) -> None:
    """Register a flag provider for the handler's domain once per process, if none is there."""
    return None
