"""The per-run decision: one evaluation, the key it implies, and what is kept of it."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, KeyDecision, PartitionKeyError
from ai_agent_handler.decision import CODE_DEFAULT, VARIANTS, decide, evaluation_context


class Recording:
    """An in-memory flag that answers ``value`` and remembers every context it was asked."""

    def __init__(self, value: bool, *, version: str | None = "7") -> None:
        self.value = value
        self.contexts: list[EvaluationContext] = []
        self.metadata = {} if version is None else {"version": version}
        flag = InMemoryFlag(
            default_variant="composite", variants=dict(VARIANTS), context_evaluator=self._evaluate
        )
        api.set_provider_and_wait(InMemoryProvider({FLAG_KEY: flag}), domain=FLAG_DOMAIN)

    def _evaluate(self, flag: Any, ctx: EvaluationContext) -> FlagResolutionDetails[bool]:
        self.contexts.append(ctx)
        return FlagResolutionDetails(
            value=self.value,
            variant="composite" if self.value else "legacy",
            reason=Reason.TARGETING_MATCH,
            flag_metadata=self.metadata,
        )


@pytest.mark.parametrize(
    ("flag", "part_id", "key", "scheme"),
    [
        (True, "acme", "ep#acme", "composite"),
        (True, None, "ep", "legacy"),  # no part: the endpoint is the key whatever the flag
        (True, "", "ep", "legacy"),
        (False, "acme", "ep", "legacy"),  # partial rollback: the part stays set
        (False, None, "ep", "legacy"),
    ],
)
def test_the_key_follows_the_flag_and_the_part(
    flag: bool, part_id: str | None, key: str, scheme: str
) -> None:
    Recording(flag)
    decision = decide("ep", part_id, run_uuid="run-1", phase="staging")
    assert decision == KeyDecision(
        run_uuid="run-1",
        endpoint_id="ep",
        part_id=part_id or None,
        phase="staging",
        routing_key=key,
        key_scheme=scheme,  # type: ignore[arg-type]
        flag_value=flag,
        variant="composite" if flag else "legacy",
        reason="TARGETING_MATCH",
        error_code=None,
        error_message=None,
        flag_set_version="7",
    )


@pytest.mark.parametrize(
    ("part_id", "phase", "attributes"),
    [
        ("acme", "dev", {"endpoint_id": "ep", "part_id": "acme", "phase": "dev"}),
        (None, "dev", {"endpoint_id": "ep", "phase": "dev"}),
        ("acme", None, {"endpoint_id": "ep", "part_id": "acme"}),
    ],
)
def test_the_evaluation_context(
    part_id: str | None, phase: str | None, attributes: dict[str, str]
) -> None:
    flag = Recording(True)
    decide("ep", part_id, run_uuid="r", phase=phase)
    (context,) = flag.contexts
    assert context.targeting_key == "ep"
    assert dict(context.attributes) == attributes
    assert evaluation_context("ep", part_id, phase).attributes == attributes


@pytest.mark.parametrize(
    ("endpoint_id", "part_id"),
    [(None, "acme"), ("", None), ("a#b", "c"), ("ep", "p#q"), (" ep", None), ("ep", 7)],
)
def test_invalid_ids_are_refused_before_the_flag_is_asked(endpoint_id: Any, part_id: Any) -> None:
    flag = Recording(True)
    with pytest.raises(PartitionKeyError):
        decide(endpoint_id, part_id, run_uuid="r")
    assert flag.contexts == []


def test_an_evaluation_error_means_the_legacy_key_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.set_provider_and_wait(InMemoryProvider({}), domain=FLAG_DOMAIN)  # the flag is missing
    logger = logging.getLogger("test.decision")
    with caplog.at_level(logging.WARNING, logger="test.decision"):
        decision = decide("ep", "acme", run_uuid="r", logger=logger)
    assert CODE_DEFAULT is False
    assert (decision.routing_key, decision.key_scheme) == ("ep", "legacy")
    assert decision.error_code == "FLAG_NOT_FOUND" and decision.reason == "ERROR"
    (record,) = caplog.records
    assert "FLAG_NOT_FOUND" in record.getMessage() and "legacy key" in record.getMessage()


def test_no_version_in_the_metadata_is_none() -> None:
    Recording(True, version=None)
    assert decide("ep", "p", run_uuid="r").flag_set_version is None
