"""Reading and editing the partition-key flag inside a flagd document (pure, no I/O).

Operators steer :data:`~ai_agent_handler.FLAG_KEY` through one canonical targeting shape::

    {"if": [
        {"in": [{"var": "endpoint_id"}, [<allow-listed endpoints>]]},
        "composite",
        {"fractional": [
            {"cat": ["pk-rollout-", {"var": "targetingKey"}]},
            ["composite", N], ["legacy", 100 - N]]}]}

Allow-listed endpoints always get the composite key; every other endpoint is bucketed by a
hash of a *seed* built from its ``endpoint_id`` (the evaluation context's targeting key).
The seed does not contain the flag key, so renaming the flag never reshuffles endpoints;
the composite bucket comes first and the total weight stays 100, so raising ``N`` only moves
endpoints from legacy to composite and lowering it only moves them back.

:func:`read_state` says in plain words what a document does; the transformations
(:func:`set_everywhere`, :func:`allow`, :func:`disallow`, :func:`set_percent`,
:func:`rollback`, :func:`bump_version`) return a *new* document and never modify their
input. Writing, locking and validation against the flagd schema are the caller's job.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal, TypeGuard

from ..decision import COMPOSITE, LEGACY, VARIANTS
from ..exceptions import FlagEditError, PartitionKeyError
from ..flag_file.document import MAX_DEPTH, SCHEMA, too_deep, validate
from ..partition_key import validate_id
from ..settings import FLAG_KEY, PHASES

FLAG_SET_ID = "ai_agent_handler"

#: The bucketing value of the percentage rule. Fixed: changing it reshuffles every endpoint.
SEED: dict[str, Any] = {"cat": ["pk-rollout-", {"var": "targetingKey"}]}

TOTAL_WEIGHT = 100

StateKind = Literal[
    "legacy-everywhere",
    "composite-everywhere",
    "allow-list",
    "percent",
    "allow-list-and-percent",
    "disabled",
    "custom",
    "missing",
]


@dataclass(frozen=True)
class RolloutState:
    """What a flag document does to :data:`FLAG_KEY`, in operator terms."""

    kind: StateKind
    #: Allow-listed endpoints (canonical shape only), in file order.
    allowed: tuple[str, ...] = ()
    #: Share of the non-allow-listed endpoints that gets the composite key (canonical shape).
    percent: int | None = None
    #: True when the targeting is the canonical shape (``allow`` / ``percent`` can edit it).
    canonical: bool = False
    #: True when the flag has no targeting (a plain on/off switch such as dev's file).
    plain: bool = False
    default_variant: str | None = None
    detail: str = field(default="", compare=False)

    def describe(self) -> str:
        """One line in plain words, e.g. ``"composite for 30 % of endpoints; legacy ..."``."""
        if self.kind == "legacy-everywhere":
            return "legacy everywhere (every endpoint sends endpoint_id)"
        if self.kind == "composite-everywhere":
            extra = ""
            if self.allowed:
                extra = f" (allow-list of {len(self.allowed)} kept, inactive at 100 %)"
            return "composite everywhere (every endpoint sends endpoint_id#part_id)" + extra
        if self.kind == "allow-list":
            return (
                f"composite for {len(self.allowed)} allow-listed endpoint(s): "
                f"{names(self.allowed)}; legacy for all others"
            )
        if self.kind == "percent":
            return f"composite for {self.percent} % of endpoints; legacy for the rest"
        if self.kind == "allow-list-and-percent":
            return (
                f"composite for {len(self.allowed)} allow-listed endpoint(s) "
                f"({names(self.allowed)}) and {self.percent} % of the others; "
                "legacy for the rest"
            )
        if self.kind == "disabled":
            return "flag DISABLED: handlers use the code default, legacy everywhere"
        if self.kind == "missing":
            return f"flag {FLAG_KEY!r} is missing: handlers use the code default, legacy"
        return "custom targeting (not the canonical shape): use `explain` per endpoint" + (
            f"; {self.detail}" if self.detail else ""
        )

    def to_json(self) -> dict[str, Any]:
        """The state for ``--json`` output and audit records."""
        return {
            "kind": self.kind,
            "description": self.describe(),
            "allowed": list(self.allowed),
            "percent": self.percent,
            "canonical": self.canonical,
            "default_variant": self.default_variant,
        }


def names(endpoints: Sequence[str], limit: int = 5) -> str:
    """``endpoints`` comma-separated, the first ``limit`` only (``... (+N more)``)."""
    shown = ", ".join(endpoints[:limit])
    more = len(endpoints) - limit
    return f"{shown}, ... (+{more} more)" if more > 0 else shown


def did_you_mean(name: str, listed: Sequence[str], *, count: int = 2) -> list[str]:
    """The listed names closest to ``name`` (a mistyped endpoint), best first; may be empty.

    Near misses only (difflib ratio 0.8 or more), and only those about as close as the best
    one: ``aws-prod-eu-west1`` suggests ``aws-prod-eu-west-1``, not every ``aws-prod-*``.
    """
    scored = []
    for other in dict.fromkeys(listed):
        matcher = difflib.SequenceMatcher(None, name, other)
        if matcher.real_quick_ratio() >= 0.8 and matcher.quick_ratio() >= 0.8:
            ratio = matcher.ratio()
            if ratio >= 0.8:
                scored.append((ratio, other))
    if not scored:
        return []
    scored.sort(key=lambda item: -item[0])
    best = scored[0][0]
    return [other for ratio, other in scored[:count] if ratio >= best - 0.02]


_SEPARATORS = re.compile(r"[-_.:/\s]+")


def _spelling(name: str) -> str:
    return _SEPARATORS.sub("", name).casefold()


def spelled_like(name: str, listed: Sequence[str]) -> list[str]:
    """Listed names that differ from ``name`` only in case or separators (``-_.:/``).

    ``aws-prod-eu-west1`` is spelled like ``aws-prod-eu-west-1``: the same name typed badly.
    ``aws-prod-eu-west-2`` is not: a neighbour with another number is another endpoint.
    """
    spelling = _spelling(name)
    return [other for other in listed if other != name and _spelling(other) == spelling]


def canonical_targeting(allowed: Sequence[str], percent: int) -> dict[str, Any]:
    """The canonical targeting for an allow-list and a composite share of ``percent``."""
    _check_percent(percent)
    return {
        "if": [
            {"in": [{"var": "endpoint_id"}, list(allowed)]},
            COMPOSITE,
            {
                "fractional": [
                    copy.deepcopy(SEED),
                    [COMPOSITE, percent],
                    [LEGACY, TOTAL_WEIGHT - percent],
                ]
            },
        ]
    }


def _parse_canonical(targeting: object) -> tuple[list[str], int] | None:
    """``(allowed, percent)`` when ``targeting`` is the canonical shape, else None."""
    try:
        allowed = targeting["if"][0]["in"][1]  # type: ignore[index]
        percent = targeting["if"][2]["fractional"][1][1]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    if not (
        isinstance(allowed, list)
        and all(isinstance(endpoint, str) for endpoint in allowed)
        and _is_int(percent)
        and 0 <= percent <= TOTAL_WEIGHT
    ):
        return None
    # The same JSON, to the type of every value: a weight 95.0 or true is not canonical.
    same = _canonical_json(targeting) == _canonical_json(canonical_targeting(allowed, percent))
    return (list(allowed), percent) if same else None


def _canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    flags = doc.get("flags")
    if not isinstance(flags, Mapping):
        return None
    flag = flags.get(FLAG_KEY)
    return flag if isinstance(flag, Mapping) else None


def read_state(doc: Mapping[str, Any]) -> RolloutState:
    """What the document does to :data:`FLAG_KEY`, in operator terms.

    Only the canonical shape and the plain switch (no targeting) are named precisely;
    anything else is ``custom`` and ``explain`` (which runs the real evaluator) is the way to
    see what a given endpoint gets.
    """
    flag = _flag(doc)
    if flag is None:
        return RolloutState(kind="missing")
    default = flag.get("defaultVariant")
    default_variant = default if isinstance(default, str) else None
    if flag.get("state") == "DISABLED":
        return RolloutState(kind="disabled", default_variant=default_variant)
    targeting = flag.get("targeting")
    if targeting is None or targeting == {}:
        if default_variant == COMPOSITE:
            kind: StateKind = "composite-everywhere"
        elif default_variant == LEGACY:
            kind = "legacy-everywhere"
        else:
            return RolloutState(
                kind="custom",
                default_variant=default_variant,
                detail=f"defaultVariant {default!r} is neither composite nor legacy",
            )
        return RolloutState(kind=kind, plain=True, default_variant=default_variant)
    parsed = _parse_canonical(targeting)
    if parsed is None:
        return RolloutState(kind="custom", default_variant=default_variant)
    allowed, percent = parsed
    if percent == TOTAL_WEIGHT:
        kind = "composite-everywhere"
    elif allowed and percent:
        kind = "allow-list-and-percent"
    elif allowed:
        kind = "allow-list"
    elif percent:
        kind = "percent"
    else:
        kind = "legacy-everywhere"
    return RolloutState(
        kind=kind,
        allowed=tuple(allowed),
        percent=percent,
        canonical=True,
        default_variant=default_variant,
    )


def version_of(doc: Mapping[str, Any]) -> int | None:
    """``metadata.version`` as an int, or None when absent or not an integer."""
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    version = metadata.get("version")
    if _is_int(version):
        return int(version)
    if isinstance(version, str) and version.isdigit():
        return int(version)
    return None


def bump_version(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with ``metadata.version`` one higher (1 when the document had none)."""
    return with_version(doc, (version_of(doc) or 0) + 1)


def with_version(doc: Mapping[str, Any], version: int) -> dict[str, Any]:
    """A copy with ``metadata.version`` set to ``version``."""
    new = copy.deepcopy(dict(doc))
    metadata = new.get("metadata")
    if not isinstance(metadata, dict):
        metadata = new["metadata"] = {}
    metadata["version"] = version
    return new


# "version": 12 or "version": "12" anywhere in the bytes; bounded digits, no backtracking.
_VERSION_TEXT = re.compile(rb'"version"\s{0,64}:\s{0,64}"?(\d{1,18})')


def loose_version(data: bytes | None) -> int | None:
    """The version a file says it has, however broken it is: ``metadata.version`` of the
    JSON object when it parses, else the highest ``"version": N`` in the bytes (a truncated
    or hand-broken file still names it); None when there is none."""
    doc = loose_document(data)
    if doc is not None:
        return version_of(doc)
    if not data:
        return None
    found = [int(match) for match in _VERSION_TEXT.findall(data)]
    return max(found) if found else None


def _editable(doc: Mapping[str, Any], action: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A deep copy of ``doc`` and its flag, refusing documents the action cannot edit."""
    new = copy.deepcopy(dict(doc))
    flags = new.get("flags")
    flag = flags.get(FLAG_KEY) if isinstance(flags, dict) else None
    if not isinstance(flag, dict):
        raise FlagEditError(
            f"cannot {action}: the file has no flag {FLAG_KEY!r}; "
            "`rollback` writes a fresh legacy flag"
        )
    return new, flag


def _rollout_of(doc: Mapping[str, Any], action: str) -> tuple[list[str], int]:
    """Current ``(allowed, percent)``, reading a plain switch as an empty allow-list."""
    state = read_state(doc)
    if state.canonical:
        return list(state.allowed), state.percent or 0
    if state.plain:
        return [], TOTAL_WEIGHT if state.kind == "composite-everywhere" else 0
    if state.kind == "missing":
        _editable(doc, action)  # raises with the reason
    if state.kind == "disabled":
        raise FlagEditError(
            f"cannot {action}: the flag is DISABLED; run `set legacy` (or `rollback`) "
            "first to enable it explicitly as legacy everywhere"
        )
    raise FlagEditError(
        f"cannot {action}: the targeting is not the canonical shape; `rollback` or "
        "`set composite|legacy` replaces it with the canonical shape"
    )


def _with_rollout(doc: Mapping[str, Any], allowed: Sequence[str], percent: int) -> dict[str, Any]:
    state = read_state(doc)
    if state.plain and not allowed:
        everywhere = TOTAL_WEIGHT if state.kind == "composite-everywhere" else 0
        if percent == everywhere:
            # The same meaning as the plain switch: rewriting it in the canonical shape
            # would be a change that changes nothing.
            return copy.deepcopy(dict(doc))
    new, flag = _editable(doc, "edit")
    flag["state"] = "ENABLED"
    flag["variants"] = dict(VARIANTS)
    # The default only answers when targeting returns nothing (no targeting key); keep it
    # aligned with the majority so that corner case never surprises anybody.
    flag["defaultVariant"] = COMPOSITE if percent == TOTAL_WEIGHT else LEGACY
    flag["targeting"] = canonical_targeting(allowed, percent)
    return new


def _check_percent(percent: object) -> None:
    if not _is_int(percent) or not 0 <= percent <= TOTAL_WEIGHT:
        raise FlagEditError(f"percent must be an integer from 0 to 100, got {percent!r}")


def _check_endpoints(endpoints: Iterable[str]) -> list[str]:
    checked: list[str] = []
    for endpoint in endpoints:
        try:
            value = validate_id("endpoint_id", endpoint)
        except PartitionKeyError as err:
            raise FlagEditError(str(err)) from err
        if not value:
            raise FlagEditError("endpoint_id must not be empty")
        if value not in checked:
            checked.append(value)
    if not checked:
        raise FlagEditError("name at least one endpoint")
    return checked


def set_everywhere(doc: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The same key for every endpoint: ``variant`` is ``"composite"`` or ``"legacy"``.

    A plain switch (no targeting, like dev's file) only flips ``defaultVariant``. Any other
    document gets the canonical shape: composite is ``percent 100`` with the allow-list kept
    (so a later ``percent 50`` steps back without losing it); legacy is ``percent 0`` with an
    empty allow-list (legacy for *every* endpoint). Custom targeting and a DISABLED flag are
    replaced, which is the point of this command.
    """
    if variant not in VARIANTS:
        raise FlagEditError(f"variant must be 'composite' or 'legacy', got {variant!r}")
    state = read_state(doc)
    if state.plain:
        new, flag = _editable(doc, f"set {variant}")
        flag["state"] = "ENABLED"
        flag["variants"] = dict(VARIANTS)
        flag["defaultVariant"] = variant
        return new
    if variant == COMPOSITE:
        return _with_rollout(doc, list(state.allowed), TOTAL_WEIGHT)
    return _with_rollout(doc, [], 0)


def allow(doc: Mapping[str, Any], endpoints: Iterable[str]) -> dict[str, Any]:
    """Add endpoints to the allow-list (composite for them, whatever the percentage).

    Idempotent: endpoints already listed stay where they are. A plain switch is converted
    to the canonical shape with the same meaning (0 % or 100 %).
    """
    wanted = _check_endpoints(endpoints)
    allowed, percent = _rollout_of(doc, "allow")
    allowed += [e for e in wanted if e not in allowed]
    return _with_rollout(doc, allowed, percent)


def disallow(doc: Mapping[str, Any], endpoints: Iterable[str]) -> dict[str, Any]:
    """Remove endpoints from the allow-list; the percentage then decides for them.

    Removing an endpoint that is not listed is refused (:class:`FlagEditError` naming the
    listed endpoints, with "did you mean" for near misses): during an incident a mistyped
    name must not look like a successful removal.
    """
    unwanted = _check_endpoints(endpoints)
    allowed, percent = _rollout_of(doc, "disallow")
    missing = [e for e in unwanted if e not in allowed]
    if missing:
        raise FlagEditError(_not_listed(missing, allowed))
    return _with_rollout(doc, [e for e in allowed if e not in unwanted], percent)


def _not_listed(missing: Sequence[str], allowed: Sequence[str]) -> str:
    named = []
    for endpoint in missing:
        close = did_you_mean(endpoint, allowed)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        named.append(f"{endpoint}{hint}")
    listed = f"listed: {names(allowed, limit=8)}" if allowed else "the allow-list is empty"
    return f"cannot disallow {', '.join(named)}: not on the allow-list ({listed}); nothing written"


def set_percent(doc: Mapping[str, Any], percent: int) -> dict[str, Any]:
    """Composite for ``percent`` % of the endpoints outside the allow-list (kept as is)."""
    _check_percent(percent)
    allowed, _ = _rollout_of(doc, "set percent")
    return _with_rollout(doc, allowed, percent)


def rollback(doc: Mapping[str, Any] | None, *, phase: str | None = None) -> dict[str, Any]:
    """Legacy for every endpoint, immediately, from any starting point.

    Clears: the allow-list, the percentage (0), custom targeting, a DISABLED state (the flag
    is enabled with an explicit legacy answer, so it no longer depends on the code default).
    Keeps: the variants, the canonical shape with its seed (so ``allow`` and ``percent`` work
    right after), a plain switch stays plain, other flags and ``metadata``. What was cleared
    is in the audit record's ``before`` state, and :func:`restore_commands` turns it back
    into commands. ``doc=None`` (the file is unreadable or not JSON) gives a fresh document
    for ``phase``.
    """
    if doc is None or _flag(doc) is None:
        base = fresh_document(phase or phase_of(doc) or "unknown")
        if doc is not None and isinstance(doc.get("flags"), Mapping):
            # Keep the file's other flags; only ours is (re)created.
            merged = copy.deepcopy(dict(doc))
            merged["flags"] = {**copy.deepcopy(dict(doc["flags"])), **base["flags"]}
            merged.setdefault("$schema", SCHEMA)
            return merged
        version = version_of(doc) if doc is not None else None
        if version is not None:
            base["metadata"]["version"] = version
        return base
    state = read_state(doc)
    if state.plain:
        return set_everywhere(doc, LEGACY)
    return _with_rollout(doc, [], 0)


def phase_of(doc: Mapping[str, Any] | None, source: str | None = None) -> str | None:
    """The phase a flag file is for: its ``metadata.phase``, else the file name's stem
    (``production.flagd.json``) when that is a phase; None when neither says."""
    metadata = doc.get("metadata") if doc is not None else None
    phase = metadata.get("phase") if isinstance(metadata, Mapping) else None
    if isinstance(phase, str):
        return phase
    if source is None:
        return None
    stem = PurePosixPath(source).name.split(".", 1)[0]
    return stem if stem in PHASES else None


def rebuild_legacy(
    raw: Mapping[str, Any] | None, *, phase: str | None = None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A valid legacy-everywhere document for a missing (``None``) or invalid file, and
    what of the file it left out for being nested too deep.

    ``raw`` is what :func:`loose_document` could still read of the file, however deeply
    nested. Keeps what can be kept (other flags, metadata) when that gives a valid file,
    else starts afresh, continuing the old version sequence when it can still be read.
    What is nested too deep to keep is left out first, and named (``the flag NAME``,
    ``the metadata key NAME``, ``the top-level key NAME``).
    """
    dropped: list[str] = []
    if raw is not None:
        repaired = rollback(_within_depth(raw, dropped), phase=phase)
        if not validate(bump_version(repaired)):
            return repaired, tuple(dropped)
    version = (version_of(raw) or 0) if raw else 0
    return fresh_document(phase or "unknown", version=version), tuple(dropped)


def _within_depth(raw: Mapping[str, Any], dropped: list[str]) -> dict[str, Any]:
    """``raw`` without the flags, metadata entries and top-level keys nested past
    :data:`MAX_DEPTH` (checked without recursion), so copying it cannot recurse too deep."""

    def fits(value: object, depth: int) -> bool:
        return too_deep(value, limit=MAX_DEPTH - depth) is None

    kept: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("flags", "metadata") and isinstance(value, Mapping):
            inner = {}
            for name, item in value.items():
                if fits(item, 2):
                    inner[name] = item
                elif not (key == "flags" and name == FLAG_KEY):  # ours is written afresh
                    what = "the flag" if key == "flags" else "the metadata key"
                    dropped.append(f"{what} {name}")
            kept[key] = inner
        elif fits(value, 1):
            kept[key] = value
        else:
            dropped.append(f"the top-level key {key}")
    return kept


def loose_document(data: bytes | None) -> dict[str, Any] | None:
    """The JSON object in ``data`` without any validation; None when there is none."""
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to decode
        return None
    return doc if isinstance(doc, dict) else None


def fresh_document(phase: str, *, version: int = 0) -> dict[str, Any]:
    """A complete phase file with the flag legacy everywhere in the canonical shape."""
    return {
        "$schema": SCHEMA,
        "metadata": {"flagSetId": FLAG_SET_ID, "phase": phase, "version": version},
        "flags": {
            FLAG_KEY: {
                "state": "ENABLED",
                "variants": dict(VARIANTS),
                "defaultVariant": LEGACY,
                "targeting": canonical_targeting([], 0),
            }
        },
    }


def restore_commands(before: RolloutState) -> list[tuple[str, ...]]:
    """The subcommands, as argument lists, that bring a rolled-back flag back to ``before``
    (empty when unknown). Printed for a shell, each is quoted (``shlex.join``)."""
    if before.kind == "composite-everywhere":
        return [("set", "composite")]
    if not before.canonical:
        return []
    commands: list[tuple[str, ...]] = []
    if before.allowed:
        commands.append(("allow", *before.allowed))
    if before.percent:
        commands.append(("percent", str(before.percent)))
    return commands
