"""CloudWatch Embedded Metric Format counters an operator can alarm on.

A JSON line on stdout that CloudWatch turns into metrics with no agent, no API call and no
extra infrastructure in Lambda. Namespace :data:`METRICS_NAMESPACE`, dimensions ``phase``
and ``key_scheme``; metrics ``KeyDecisions``, ``FlagEvaluationErrors`` (one line per run
decision, written by :class:`~ai_agent_handler.decision_log.DecisionHook`),
``LambdaInvokeErrors`` (one line per failed call) and ``StreamChunksFailed`` (one line per
message end that lost chunks, never one per chunk). On by default inside Lambda, off
elsewhere unless ``$AI_AGENT_HANDLER_METRICS=emf`` or :func:`configure_metrics` says so (a
library must not print to a host's stdout uninvited). Lines carry ids and error codes only.

The writer is the receivers' (:class:`~ai_agent_handler.receiver.ReceiverMetrics`); like
it, this module imports nothing beyond the standard library, so the transport can count
failures without loading OpenFeature.
"""

from __future__ import annotations

from typing import TextIO

from .partition_key import KeyScheme, key_scheme_of
from .receiver import METRICS_ENV as METRICS_ENV
from .receiver import METRICS_NAMESPACE as METRICS_NAMESPACE
from .receiver import ReceiverMetrics

# One EMF writer for the handler's counters and the receivers' (receiver.py keeps to the
# standard library so that a receiver can copy that one file).
EmfMetrics = ReceiverMetrics


_metrics = EmfMetrics()


def metrics() -> EmfMetrics:
    """The process-wide EMF writer the decision hook and the transport use."""
    return _metrics


def configure_metrics(
    *,
    stream: TextIO | None = None,
    enabled: bool | None = None,
    namespace: str = METRICS_NAMESPACE,
) -> EmfMetrics:
    """Replace the process-wide EMF writer (``enabled=None``: decide from the environment)."""
    global _metrics
    _metrics = EmfMetrics(stream=stream, enabled=enabled, namespace=namespace)
    return _metrics


def record_invoke_error(
    funct: str, routing_key: str, *, phase: str | None, error_code: str
) -> None:
    """Count one Lambda/SQS call that failed for good (after botocore's retries)."""
    _metrics.emit(
        {"LambdaInvokeErrors": 1},
        phase=phase,
        key_scheme=_scheme(routing_key),
        properties={"funct": funct, "error_code": error_code},
    )


def record_stream_chunks_failed(count: int, routing_key: str, *, phase: str | None) -> None:
    """Count the chunks a message lost; call once per message end, not once per chunk."""
    if count <= 0:
        return
    _metrics.emit(
        {"StreamChunksFailed": count},
        phase=phase,
        key_scheme=_scheme(routing_key),
    )


def _scheme(routing_key: str) -> KeyScheme:
    return key_scheme_of(routing_key) if routing_key else "legacy"
