"""FlagFileProvider: OpenFeature provider for flagd-format flag files (in progress)."""

from __future__ import annotations


class FlagFileProvider:
    """Placeholder until the flag-provider module lands."""

    def __init__(self, source: str) -> None:
        raise NotImplementedError("FlagFileProvider is not implemented yet")
