"""One decision record per run: a log line, a metric line, an OpenTelemetry span event.

All outputs are free of chunk content, agent data and credentials (they carry ids, flag
outcomes and error codes only):

* **Decision log.** :class:`DecisionHook` is an OpenFeature hook registered on the
  :data:`~ai_agent_handler.FLAG_DOMAIN` client (see :func:`decision_hooks`). The handler
  evaluates the flag once per run, so the hook writes exactly one record per run decision to
  the logger :data:`DECISION_LOGGER`: run, endpoint, routing key, phase, key scheme,
  variant, reason, error code, flag-set version and where the flags came from
  (``flag_source``: ``live``, ``shipped``, ``fallback`` or ``setting``;
  ``flag_source_fault``: why, while the live source is faulty). The message is one JSON
  object (CloudWatch Logs Insights and most log pipelines parse it as fields); the same
  fields are attached to the ``LogRecord`` as ``record.key_decision`` for structured handlers.
* **Counters.** The same hook counts ``KeyDecisions`` and ``FlagEvaluationErrors`` as
  CloudWatch Embedded Metric Format lines (:mod:`ai_agent_handler.metrics`).
* **OpenTelemetry**, when the host uses it: if the host process has imported
  ``opentelemetry``, the ``openfeature-hooks-opentelemetry`` tracing hook (extra ``otel``) is
  added next to the decision hook and records each evaluation as a span event. Nothing here
  imports OpenTelemetry otherwise, so it is never required and costs nothing when absent.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from openfeature.flag_evaluation import FlagEvaluationDetails, FlagValueType
from openfeature.hook import Hook, HookContext, HookHints

from .exceptions import PartitionKeyError
from .metrics import metrics
from .partition_key import key_scheme_of, routing_key
from .settings import FLAG_KEY

#: The logger the per-run decision records go to.
DECISION_LOGGER = "ai_agent_handler.decisions"

_decision_log = logging.getLogger(DECISION_LOGGER)


# -- the decision hook --------------------------------------------------------------------
class DecisionHook(Hook):
    """Logs one structured record and one EMF line per evaluation of the partition-key flag.

    Runs in ``finally_after``, which OpenFeature calls for every evaluation, successful or
    not (provider not ready, flag missing, type mismatch, provider exception), so a run whose
    decision fell back to the legacy key is never missing from the log. Other flags of the
    domain are ignored. A hook must never break an evaluation; OpenFeature swallows hook
    errors, and this one only formats a few ids.
    """

    def __init__(self, flag_key: str = FLAG_KEY) -> None:
        self.flag_key = flag_key

    def finally_after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[FlagValueType],
        hints: HookHints,
    ) -> None:
        """Write the decision record and count it."""
        if hook_context.flag_key != self.flag_key:
            return
        log_decision(decision_record(hook_context, details, hints))


def log_decision(record: Mapping[str, Any]) -> None:
    """Write one decision record to :data:`DECISION_LOGGER` and count it (EMF)."""
    # INFO even on an evaluation error: decision.decide already warns once, on the
    # handler's logger; alarms belong on the FlagEvaluationErrors counter.
    if _decision_log.isEnabledFor(logging.INFO):
        _decision_log.info(
            "%s",
            json.dumps(record, separators=(",", ":"), sort_keys=True),
            extra={"key_decision": dict(record)},
        )
    metrics().emit(
        {"KeyDecisions": 1, "FlagEvaluationErrors": 1 if record["error_code"] else 0},
        phase=record["phase"],
        key_scheme=str(record["key_scheme"]),
        properties={
            "flag_set_version": record["flag_set_version"],
            "flag_source": record.get("flag_source"),
        },
    )


def decision_record(
    hook_context: HookContext,
    details: FlagEvaluationDetails[FlagValueType],
    hints: HookHints,
) -> dict[str, Any]:
    """The fields of one decision record (ids, flag outcome, error code; nothing else).

    The routing key and key scheme follow the handler's rule
    (:func:`~ai_agent_handler.partition_key.routing_key`): composite only when the flag is
    on *and* the run has a ``part_id``.
    """
    context = hook_context.evaluation_context
    attributes = context.attributes
    endpoint = _str_or_none(attributes.get("endpoint_id")) or context.targeting_key
    part = _str_or_none(attributes.get("part_id"))
    try:
        key: str | None = routing_key(endpoint, part, composite=details.value is True)
    except PartitionKeyError:  # an evaluation made without valid ids: no key to record
        key = None
    provider = hook_context.provider_metadata
    return {
        "event": "key_decision",
        "flag_key": hook_context.flag_key,
        "run_uuid": _str_or_none(hints.get("run_uuid")),
        "endpoint_id": endpoint,
        "routing_key": key,
        "phase": _str_or_none(attributes.get("phase")),
        "key_scheme": key_scheme_of(key) if key else "legacy",
        "flag_value": details.value is True,
        "variant": details.variant,
        "reason": enum_text(details.reason),
        "error_code": enum_text(details.error_code),
        "flag_set_version": metadata_version(details.flag_metadata),
        **serving_of(_provider_of(hook_context)),
        "provider": provider.name if provider is not None else None,
    }


def _provider_of(hook_context: HookContext) -> object:
    # The provider that answered: the one registered for the evaluating client's domain.
    from openfeature import api

    client = hook_context.client_metadata
    return api.get_client(client.domain if client is not None else None).provider


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


_decision_hook = DecisionHook()
_otel_hook: Hook | None = None
_otel_unavailable = False


def decision_hooks() -> list[Hook]:
    """The hooks to register on the :data:`~ai_agent_handler.FLAG_DOMAIN` client.

    Always the :class:`DecisionHook`; plus the OpenTelemetry tracing hook when the host uses
    OpenTelemetry (it has imported ``opentelemetry``) and the ``otel`` extra is installed.
    """
    otel = _otel_tracing_hook()
    return [_decision_hook] if otel is None else [_decision_hook, otel]


def _otel_tracing_hook() -> Hook | None:
    global _otel_hook, _otel_unavailable
    if _otel_hook is not None:
        return _otel_hook
    # Importing OpenTelemetry ourselves would cost start-up time in every Lambda that does
    # not use it; a host that does use it has imported it already.
    if _otel_unavailable or "opentelemetry" not in sys.modules:
        return None
    try:
        from openfeature.contrib.hook.opentelemetry import TracingHook
    except ImportError:
        _otel_unavailable = True
        return None
    _otel_hook = TracingHook()
    return _otel_hook


# -- reading an evaluation's details ---------------------------------------------------------
def serving_of(provider: object) -> dict[str, str | None]:
    """``flag_source`` and ``flag_source_fault`` of a provider that reports them (a
    :class:`~ai_agent_handler.FlagFileProvider`); None for one that does not."""
    serving = getattr(provider, "serving", None)
    if not isinstance(serving, Mapping):
        return {"flag_source": None, "flag_source_fault": None}
    return {
        "flag_source": _text(serving.get("flag_source")),
        "flag_source_fault": _text(serving.get("flag_source_fault")),
    }


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def enum_text(value: object) -> str | None:
    """An OpenFeature reason or error code as text (an enum in the SDK, a str from some
    providers); None stays None."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def metadata_version(metadata: Mapping[str, object] | None) -> str | None:
    """The flag set's ``version`` from evaluation metadata, as text; None when absent."""
    if not metadata:
        return None
    version = metadata.get("version")
    return None if version is None else str(version)
