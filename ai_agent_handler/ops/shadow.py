"""Shadow reads: whether the copies under the two keys agree (pure: no I/O).

On a sample of reads of a composite key, the receivers also read the legacy key and count
one of four outcomes (:data:`~ai_agent_handler.receiver.SHADOW_METRICS`, dimensions
``phase`` and ``key_scheme``): ``ShadowSame`` (both keys hold the item, the copies agree),
``ShadowDifferent`` (both hold it, the copies disagree), ``ShadowLegacyOnly`` (only the legacy
key holds it: its backfill is owed) and ``ShadowCompositeOnly``.

**Consistency** is ``100 * ShadowSame / (ShadowSame + ShadowDifferent)``: of the sampled reads
that found the item under both keys (the *compared* reads), the share whose copies agree;
undefined (None) when none was compared. ``ShadowLegacyOnly`` is backfill owed, not a part of
it. The guarded ramp (``ramp start --min-consistency``) and ``retire-check`` judge on this one
figure, :func:`consistency`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..receiver import (
    SHADOW_COMPOSITE_ONLY,
    SHADOW_DIFFERENT,
    SHADOW_LEGACY_ONLY,
    SHADOW_SAME,
)

#: ``retire-check --min-consistency``'s default: at most one compared read in a thousand may
#: disagree.
DEFAULT_MIN_CONSISTENCY = 99.9


def consistency(same: float, different: float) -> float | None:
    """``100 * same / (same + different)``, in percent; None when nothing was compared."""
    compared = same + different
    if compared <= 0:
        return None
    return 100.0 * same / compared


@dataclass(frozen=True)
class ShadowCounts:
    """The four shadow-read counters of one window, summed over ``key_scheme``."""

    same: float = 0.0
    different: float = 0.0
    legacy_only: float = 0.0
    composite_only: float = 0.0

    @classmethod
    def of(cls, sums: Mapping[str, Mapping[str, float]]) -> ShadowCounts:
        """From counter sums ``{metric: {key_scheme: sum}}`` (a counter not there is 0)."""

        def total(metric: str) -> float:
            return float(sum(sums.get(metric, {}).values()))

        return cls(
            total(SHADOW_SAME),
            total(SHADOW_DIFFERENT),
            total(SHADOW_LEGACY_ONLY),
            total(SHADOW_COMPOSITE_ONLY),
        )

    @property
    def compared(self) -> float:
        """The sampled reads that found the item under both keys."""
        return self.same + self.different

    @property
    def sampled(self) -> float:
        """Every sampled read that found the item under either key."""
        return self.same + self.different + self.legacy_only + self.composite_only

    @property
    def consistency(self) -> float | None:
        """:func:`consistency` of these counts."""
        return consistency(self.same, self.different)


def check_min_consistency(value: object, name: str = "min consistency") -> float:
    """``value`` as a minimum consistency: a percentage above 0, at most 100; else
    :class:`ValueError` saying so."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a percentage, not {value!r}")
    if not (math.isfinite(value) and 0 < value <= 100):
        raise ValueError(f"{name} must be a percentage above 0 and at most 100, not {value!r}")
    return float(value)


def parse_min_consistency(text: str) -> float:
    """``"99.9"`` (or ``"99.9%"``) -> 99.9: a percentage above 0, at most 100."""
    item = text.strip().rstrip("%").strip()
    try:
        value = float(item)
    except ValueError:
        raise ValueError(f"not a percentage: {text!r} (a number above 0, at most 100)") from None
    return check_min_consistency(value, f"{text!r}")


def percent_text(value: float, limits: Iterable[float] = ()) -> str:
    """``value`` (a percentage) in words: two decimals, trailing zeros dropped, and more
    decimals where rounding would put it on the other side of 100 or of a limit (99.96 is
    never shown as 100, nor 99.899 as 99.9 against a limit of 99.9)."""
    bounds = (100.0, *limits)
    for places in range(2, 12):
        text = f"{value:.{places}f}".rstrip("0").rstrip(".")
        if all((float(text) < bound) == (value < bound) for bound in bounds):
            return text
    return repr(value)
