"""pytest plugin: the composite partition key is on by default in tests.

Installed with the package (entry point ``pytest11`` named ``ai_agent_handler``). Before
each test it registers an OpenFeature ``InMemoryProvider`` for
:data:`~ai_agent_handler.FLAG_DOMAIN` that resolves :data:`~ai_agent_handler.FLAG_KEY` to
``composite`` for every endpoint. A test that registers its own provider for the domain
overrides it. The ``partition_key_flag`` fixture switches the default::

    def test_partial_rollback(partition_key_flag):
        partition_key_flag.legacy()                          # flag off everywhere
        partition_key_flag.target({"ep-a": True}, default=False)  # per endpoint

A test whose handlers should decide from real flag files, as in production (their
``rollout_phase`` / ``flag_source``), uses the ``flag_files`` fixture; a whole module with
``pytestmark = pytest.mark.usefixtures("flag_files")``. Disable the plugin for a whole
project with ``-p no:ai_agent_handler`` (``addopts`` in its pytest configuration).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from .decision import COMPOSITE, LEGACY, VARIANTS
from .settings import FLAG_DOMAIN, FLAG_KEY

__all__ = ["PartitionKeyFlag", "flag_files", "partition_key_flag"]


class PartitionKeyFlag:
    """Controls the in-memory flag the plugin registers for the handler's domain."""

    def __init__(self) -> None:
        self.targets: dict[str, bool] = {}
        self.default = True

    def composite(self) -> None:
        """The composite key for every endpoint (the plugin's default)."""
        self.target({}, default=True)

    def legacy(self) -> None:
        """The legacy key (plain ``endpoint_id``) for every endpoint."""
        self.target({}, default=False)

    def target(self, endpoints: Mapping[str, bool], *, default: bool = False) -> None:
        """Per-endpoint values: ``{"ep-a": True, "ep-b": False}``; others get ``default``."""
        self.targets = dict(endpoints)
        self.default = default
        self.install()

    def install(self) -> None:
        """(Re-)register this flag's provider for the handler's domain and wait for it."""
        flag = InMemoryFlag(
            default_variant=COMPOSITE if self.default else LEGACY,
            variants=dict(VARIANTS),
            context_evaluator=self._evaluate,
        )
        api.set_provider_and_wait(InMemoryProvider({FLAG_KEY: flag}), domain=FLAG_DOMAIN)

    def _evaluate(
        self, flag: InMemoryFlag[bool], ctx: EvaluationContext
    ) -> FlagResolutionDetails[bool]:
        endpoint = ctx.targeting_key
        if endpoint is not None and endpoint in self.targets:
            value, reason = self.targets[endpoint], Reason.TARGETING_MATCH
        else:
            value, reason = self.default, Reason.STATIC
        return FlagResolutionDetails(
            value=value, variant=COMPOSITE if value else LEGACY, reason=reason
        )


@pytest.fixture(autouse=True)
def partition_key_flag() -> Iterator[PartitionKeyFlag]:
    """Registered before every test: composite for every endpoint unless changed."""
    control = PartitionKeyFlag()
    control.install()
    yield control


@pytest.fixture
def flag_files(partition_key_flag: PartitionKeyFlag) -> Iterator[None]:
    """This test's handlers decide from flag files, as in production.

    The plugin's provider is removed and the library sets up a
    :class:`~ai_agent_handler.FlagFileProvider` from each handler's settings
    (``rollout_phase``, ``flag_source``, ...); afterwards every provider is removed again.
    """
    from .flag_file import default_provider  # the flag machinery, only for tests using it

    api.clear_providers()
    default_provider.reset()
    yield
    api.clear_providers()
    default_provider.reset()
