"""CloudWatch Embedded Metric Format counters an operator can alarm on.

A JSON line on stdout that CloudWatch turns into metrics with no agent, no API call and no
extra infrastructure in Lambda. Namespace :data:`METRICS_NAMESPACE`, dimensions ``phase``
and ``key_scheme``; metrics ``KeyDecisions``, ``FlagEvaluationErrors`` (one line per run
decision, written by :class:`~ai_agent_handler.decision_log.DecisionHook`),
``LambdaInvokeErrors`` (one line per failed call) and ``StreamChunksFailed`` (one line per
message end that lost chunks, never one per chunk). On by default inside Lambda, off
elsewhere unless ``$AI_AGENT_HANDLER_METRICS=emf`` or :func:`configure_metrics` says so (a
library must not print to a host's stdout uninvited). Lines carry ids and error codes only.

This module imports nothing beyond the standard library, so the transport can count
failures without loading OpenFeature.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TextIO

from .partition_key import KeyScheme, key_scheme_of

__all__ = [
    "METRICS_ENV",
    "METRICS_NAMESPACE",
    "EmfMetrics",
    "configure_metrics",
    "metrics",
    "record_invoke_error",
    "record_stream_chunks_failed",
]

#: CloudWatch namespace of the EMF counters.
METRICS_NAMESPACE = "ai_agent_handler"
#: ``emf`` turns the EMF lines on outside Lambda, ``off`` turns them off inside Lambda.
METRICS_ENV = "AI_AGENT_HANDLER_METRICS"

_DIMENSIONS = ("phase", "key_scheme")
_NO_PHASE = "none"


class EmfMetrics:
    """Writes CloudWatch Embedded Metric Format lines, one JSON object per line.

    Thread-safe: each line is written with one ``write`` call under a lock, so lines from
    concurrent runs never interleave.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        namespace: str = METRICS_NAMESPACE,
    ) -> None:
        self._stream = stream
        self.enabled = _metrics_enabled_by_env() if enabled is None else enabled
        self.namespace = namespace
        self._lock = threading.Lock()

    def emit(
        self,
        values: Mapping[str, int],
        *,
        phase: str | None,
        key_scheme: str,
        properties: Mapping[str, object] | None = None,
    ) -> None:
        """One EMF line: counters ``values`` under dimensions ``phase`` and ``key_scheme``.

        ``properties`` are extra searchable fields of the log event (not metrics); callers
        pass ids and codes only.
        """
        if not self.enabled:
            return
        document: dict[str, object] = dict(properties or {})
        document.update(values)
        document["phase"] = phase or _NO_PHASE
        document["key_scheme"] = key_scheme
        document["_aws"] = {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": self.namespace,
                    "Dimensions": [list(_DIMENSIONS)],
                    "Metrics": [{"Name": name, "Unit": "Count"} for name in values],
                }
            ],
        }
        line = json.dumps(document, separators=(",", ":"), default=str) + "\n"
        # Resolve stdout at write time: test runners and hosts swap sys.stdout.
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            stream.write(line)
            stream.flush()


def _metrics_enabled_by_env() -> bool:
    setting = os.environ.get(METRICS_ENV, "").strip().lower()
    if setting in {"emf", "on", "1", "true"}:
        return True
    if setting in {"off", "0", "false", "none"}:
        return False
    # Inside Lambda stdout goes to CloudWatch Logs, where EMF lines become metrics.
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


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
