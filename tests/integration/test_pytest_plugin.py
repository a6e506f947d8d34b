"""The installed pytest plugin, seen from a user's project (a separate pytest run)."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = textwrap.dedent(
    """
    import logging
    from unittest.mock import patch

    from openfeature import api
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    from ai_agent_handler import FLAG_DOMAIN, FLAG_KEY, AIAgentEventHandler, Utility

    def key_sent():
        handler = AIAgentEventHandler(logging.getLogger("t"), {}, stream_dispatch="sync")
        handler.endpoint_id = "ep"
        handler.part_id = "acme"
        handler.run = {"run_uuid": "r", "updated_by": "u", "thread": {"thread_uuid": "t"}}
        with patch.object(Utility, "invoke_funct_on_aws_lambda") as invoke:
            handler.invoke_async_funct("f")
        return invoke.call_args[0][1]

    def test_default():
        print(f"KEY<{key_sent()}>")

    def test_own_provider_wins():
        flag = InMemoryFlag("legacy", {"composite": True, "legacy": False})
        api.set_provider_and_wait(InMemoryProvider({FLAG_KEY: flag}), domain=FLAG_DOMAIN)
        assert key_sent() == "ep"

    def test_fixture_targets(partition_key_flag):
        partition_key_flag.target({"ep": False}, default=True)
        assert key_sent() == "ep"
        partition_key_flag.composite()
        assert key_sent() == "ep#acme"

    def test_default_again_after_an_override():
        print(f"KEY<{key_sent()}>")
    """
)


def test_composite_by_default_and_overridable(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert str(result.stdout).count("KEY<ep#acme>") == 2


def test_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(
        "-s", "-p", "no:ai_agent_handler", "-p", "no:cacheprovider", "-k", "default"
    )
    result.assert_outcomes(passed=2)
    # Without the plugin no provider answers for the domain in this bare run: legacy key.
    assert str(result.stdout).count("KEY<ep>") == 2
