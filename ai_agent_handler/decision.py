"""The per-run key decision: which key a run sends, decided once from the flag.

The handler asks :func:`decide` once per run and keeps the returned :class:`KeyDecision`
for every Lambda/SQS call of that run, so a flag change never splits a run between two
keys. Evaluation goes through the OpenFeature client of :data:`FLAG_DOMAIN`; whatever
provider is registered there (a :class:`~ai_agent_handler.FlagFileProvider`, flagd, an
in-memory test provider) answers. OpenFeature never raises from an evaluation: errors come
back as the code default, which here is ``False`` -- the legacy key, the kill-switch meaning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .exceptions import PartitionKeyError
from .partition_key import Keys, KeyScheme, key_scheme_of, keys
from .settings import FLAG_DOMAIN, FLAG_KEY

if TYPE_CHECKING:
    from openfeature.client import OpenFeatureClient
    from openfeature.evaluation_context import EvaluationContext

# OpenFeature is imported on the first decision, not with the package: importing the
# handler should cost little more than boto3 (see bench/), and a run pays it once anyway.

#: The variant names of :data:`FLAG_KEY` in flag files: what operators read.
COMPOSITE: Final = "composite"
LEGACY: Final = "legacy"
#: The only variants :data:`FLAG_KEY` may have: names the operators read, booleans the code reads.
VARIANTS: Final[Mapping[str, bool]] = {COMPOSITE: True, LEGACY: False}

#: What the handler uses when the flag cannot be evaluated: the legacy key.
CODE_DEFAULT: Final = False


@dataclass(frozen=True, slots=True)
class KeyDecision:
    """The outcome of one run's flag evaluation, carried with every call of the run."""

    run_uuid: str
    endpoint_id: str
    part_id: str | None
    phase: str | None
    routing_key: str
    key_scheme: KeyScheme
    flag_value: bool
    variant: str | None
    reason: str | None
    error_code: str | None
    error_message: str | None
    flag_set_version: str | None
    #: Where the flags came from: ``live``, ``shipped``, ``fallback`` (the shipped file
    #: because the live one was unreadable at start), ``setting`` (``partition_key_mode``
    #: composite: the flag was not asked), or None (a provider that does not say).
    flag_source: str | None = None
    #: Why the flags may be stale or the fallback, while the live source is faulty.
    flag_source_fault: str | None = None


def flag_client(domain: str = FLAG_DOMAIN) -> OpenFeatureClient:
    """The OpenFeature client the handler evaluates :data:`FLAG_KEY` with: the one of
    :data:`FLAG_DOMAIN`, or of the domain of a handler's own phase (see
    :func:`~ai_agent_handler.flag_file.default_provider.flag_domain`).

    It carries the decision hooks (one log record and one metric line per run decision,
    OpenTelemetry when the host uses it): see :mod:`ai_agent_handler.decision_log`.
    """
    from openfeature import api

    from .decision_log import decision_hooks

    client = api.get_client(domain=domain)
    client.add_hooks(decision_hooks())
    return client


def evaluation_context(
    endpoint_id: str, part_id: str | None, phase: str | None
) -> EvaluationContext:
    """``targeting_key = endpoint_id``; attributes ``endpoint_id``, ``part_id``, ``phase``."""
    from openfeature.evaluation_context import EvaluationContext

    attributes: dict[str, str] = {"endpoint_id": endpoint_id}
    if part_id:
        attributes["part_id"] = part_id
    if phase:
        attributes["phase"] = phase
    return EvaluationContext(targeting_key=endpoint_id, attributes=attributes)


def decide(
    endpoint_id: str | None,
    part_id: str | None,
    *,
    run_uuid: str,
    phase: str | None = None,
    client: OpenFeatureClient | None = None,
    logger: logging.Logger | None = None,
    run_keys: Keys | None = None,
) -> KeyDecision:
    """Evaluate the flag for one run and return the key every call of that run uses.

    Ids are validated first (:class:`~ai_agent_handler.PartitionKeyError`; ``run_keys``:
    already validated by :func:`~ai_agent_handler.partition_key.keys`), so an invalid id is
    refused before the flag is even asked. An evaluation error is logged once, here, with
    its error code; the run then uses the legacy key.
    """
    both = run_keys or keys(endpoint_id, part_id)
    endpoint_id = both.legacy
    part = part_id or None
    from openfeature.flag_evaluation import FlagEvaluationOptions

    from .decision_log import enum_text, metadata_version, serving_of

    client = client or flag_client()
    details = client.get_boolean_details(
        FLAG_KEY,
        CODE_DEFAULT,
        evaluation_context(endpoint_id, part, phase),
        FlagEvaluationOptions(hook_hints={"run_uuid": run_uuid}),
    )
    value = details.value is True
    error_code = details.error_code.value if details.error_code is not None else None
    if error_code is not None and logger is not None:
        logger.warning(
            "flag %s could not be evaluated for endpoint %s (run %s): %s %s; using the legacy key",
            FLAG_KEY,
            endpoint_id,
            run_uuid,
            error_code,
            details.error_message or "",
        )
    key = both.composite if value else both.legacy
    return KeyDecision(
        run_uuid=run_uuid,
        endpoint_id=endpoint_id,
        part_id=part,
        phase=phase,
        routing_key=key,
        key_scheme=key_scheme_of(key),
        flag_value=value,
        variant=details.variant,
        reason=enum_text(details.reason),
        error_code=error_code,
        error_message=details.error_message,
        flag_set_version=metadata_version(details.flag_metadata),
        **serving_of(client.provider),
    )


def decide_composite(
    endpoint_id: str | None,
    part_id: str | None,
    *,
    run_uuid: str,
    phase: str | None = None,
    run_keys: Keys | None = None,
) -> KeyDecision:
    """``partition_key_mode = composite``: the composite key, unconditionally.

    The end of the migration before the flag code is removed: the flag is not asked, and a
    run without a ``part_id`` is refused (:class:`~ai_agent_handler.PartitionKeyError`)
    instead of falling back to the legacy key. The decision is logged and counted like a
    flag decision (``reason`` ``STATIC``, ``flag_source`` ``setting``).
    """
    both = run_keys or keys(endpoint_id, part_id)  # the ids' own errors first
    if not part_id:
        raise PartitionKeyError(
            f"part_id is required: partition_key_mode is 'composite' (endpoint_id "
            f"{endpoint_id!r}, run {run_uuid}); set partition_key_mode to 'flag' to let the "
            "flag decide again"
        )
    decision = KeyDecision(
        run_uuid=run_uuid,
        endpoint_id=both.legacy,
        part_id=part_id,
        phase=phase,
        routing_key=both.composite,
        key_scheme="composite",
        flag_value=True,
        variant=COMPOSITE,
        reason="STATIC",
        error_code=None,
        error_message=None,
        flag_set_version=None,
        flag_source="setting",
    )
    from .decision_log import log_decision

    log_decision(decision_fields(decision))
    return decision


def decision_fields(decision: KeyDecision) -> dict[str, object]:
    """The decision record of ``decision`` (the fields :mod:`.decision_log` writes)."""
    return {
        "event": "key_decision",
        "flag_key": FLAG_KEY,
        "run_uuid": decision.run_uuid,
        "endpoint_id": decision.endpoint_id,
        "routing_key": decision.routing_key,
        "phase": decision.phase,
        "key_scheme": decision.key_scheme,
        "flag_value": decision.flag_value,
        "variant": decision.variant,
        "reason": decision.reason,
        "error_code": decision.error_code,
        "flag_set_version": decision.flag_set_version,
        "flag_source": decision.flag_source,
        "flag_source_fault": decision.flag_source_fault,
        "provider": None,
    }
