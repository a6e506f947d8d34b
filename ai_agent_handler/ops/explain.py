"""``explain``: the key one endpoint gets from a flag file, and the rule that decides it.

The decision takes the handler's own path (a :class:`~ai_agent_handler.FlagFileProvider`
reading the file, an OpenFeature client, :func:`ai_agent_handler.decision.decide`), so what
``explain`` says is what a handler sends. The rule is named from the document in operator
terms (:func:`.edits.read_state`).
"""

from __future__ import annotations

from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from ..decision import decide, evaluation_context
from ..exceptions import FlagEditError
from ..settings import FLAG_KEY
from . import edits

# A private domain: explaining never disturbs the handler's own provider.
_EXPLAIN_DOMAIN = "ai_agent_handler.ops.explain"


def explain(
    source: str,
    doc: dict[str, Any],
    endpoint: str,
    part_id: str | None,
    phase: str | None,
) -> dict[str, Any]:
    """What a handler decides for ``endpoint`` with the flags in ``source``, and why.

    ``doc`` (the same file, already read) only names the rule that answered, and for the
    percentage rule the smallest percentage at which this endpoint gets the composite key;
    ``notes`` says "did you mean" when the endpoint is not listed but a listed one is close.
    Raises :class:`~ai_agent_handler.PartitionKeyError` for an invalid id.
    """
    from openfeature import api
    from openfeature.provider.no_op_provider import NoOpProvider

    from ..flag_file.provider import FlagFileProvider

    provider = FlagFileProvider(source)
    api.set_provider_and_wait(provider, domain=_EXPLAIN_DOMAIN)
    try:
        decision = decide(
            endpoint,
            part_id,
            run_uuid="explain",
            phase=phase,
            client=api.get_client(domain=_EXPLAIN_DOMAIN),
        )
    finally:
        api.set_provider(NoOpProvider(), domain=_EXPLAIN_DOMAIN)
    state = edits.read_state(doc)
    notes: list[str] = []
    if state.canonical and endpoint not in state.allowed:
        close = edits.did_you_mean(endpoint, state.allowed)
        if close:
            notes.append(f"{endpoint} is not on the allow-list; did you mean {' or '.join(close)}?")
    threshold: int | None = None
    if decision.error_code:
        rule = f"evaluation error {decision.error_code}: the code default, legacy"
    elif state.kind == "disabled":
        rule = "the flag is DISABLED: the code default, legacy"
    elif state.plain:
        rule = f"no targeting: the default variant {state.default_variant!r} for every endpoint"
    elif state.canonical and endpoint in state.allowed:
        rule = "allow-list: this endpoint is listed, composite whatever the percentage"
    elif state.canonical:
        threshold = composite_from(doc, evaluation_context(endpoint, part_id, phase))
        rule = (
            f"percentage: {state.percent} % of endpoints composite, by a stable hash of the "
            f"endpoint; this one turns composite at percent >= {threshold}"
        )
    else:
        rule = "custom targeting (not the canonical shape) answered"
    return {
        "source": source,
        "phase": phase,
        "endpoint_id": decision.endpoint_id,
        "part_id": decision.part_id,
        "routing_key": decision.routing_key,
        "key_scheme": decision.key_scheme,
        "flag_value": decision.flag_value,
        "variant": decision.variant,
        "reason": decision.reason,
        "error_code": decision.error_code,
        "error_message": decision.error_message,
        "version": _version(decision.flag_set_version, doc),
        "rule": rule,
        "composite_from_percent": threshold,
        "state": state.to_json(),
        "notes": notes,
    }


def _version(flag_set_version: str | None, doc: dict[str, Any]) -> int | None:
    """The version of the flags that decided, as an int (the provider reports a string)."""
    if flag_set_version is not None and flag_set_version.isdigit():
        return int(flag_set_version)
    return edits.version_of(doc)


def composite_threshold(doc: dict[str, Any], endpoint: str, phase: str | None) -> int | None:
    """The percentage from which ``endpoint``'s stable hash gives it the composite key in
    ``doc``, its allow-listing aside; None when the rule has no percentage (custom)."""
    if endpoint in edits.read_state(doc).allowed:
        doc = edits.disallow(doc, [endpoint])
    try:
        return composite_from(doc, evaluation_context(endpoint, None, phase))
    except FlagEditError:
        return None


def composite_from(doc: dict[str, Any], context: EvaluationContext) -> int:
    """The smallest percentage that gives this context's endpoint the composite key.

    A binary search is exact because the canonical rule is monotonic in the percentage
    (composite bucket first, constant total weight).
    """
    core = FlagdCore()

    def composite_at(percent: int) -> bool:
        core.set_flags(edits.set_percent(doc, percent))
        return core.resolve_boolean_value(FLAG_KEY, False, context).value is True

    low, high = 0, 100
    while low < high:
        middle = (low + high) // 2
        if composite_at(middle):
            high = middle
        else:
            low = middle + 1
    return low
