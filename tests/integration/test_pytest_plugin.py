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


# A downstream suite whose handlers name a phase and a flag file: the plugin overrides them
# (composite) unless a test, a module or the project opts out.
FLAG_FILE_TESTS = textwrap.dedent(
    """
    import json
    import logging
    from unittest.mock import patch

    import pytest

    from ai_agent_handler import AIAgentEventHandler, Utility

    LEGACY_FILE = {
        "flags": {
            "composite-partition-key": {
                "state": "ENABLED",
                "variants": {"composite": True, "legacy": False},
                "defaultVariant": "legacy",
            }
        },
        "metadata": {"version": 3},
    }

    def key_sent(path):
        handler = AIAgentEventHandler(
            logging.getLogger("t"), {}, stream_dispatch="sync",
            rollout_phase="staging", flag_source=str(path),
        )
        handler.endpoint_id = "ep"
        handler.part_id = "acme"
        handler.run = {"run_uuid": "r", "updated_by": "u", "thread": {"thread_uuid": "t"}}
        with patch.object(Utility, "invoke_funct_on_aws_lambda") as invoke:
            handler.invoke_async_funct("f")
        return invoke.call_args[0][1]

    @pytest.fixture
    def legacy_file(tmp_path):
        path = tmp_path / "staging.flagd.json"
        path.write_text(json.dumps(LEGACY_FILE))
        return path

    def test_plugin_default(legacy_file):
        print(f"DEFAULT<{key_sent(legacy_file)}>")

    def test_one_test_reads_its_file(flag_files, legacy_file):
        print(f"OPTED<{key_sent(legacy_file)}>")

    def test_plugin_default_again(legacy_file):
        print(f"AGAIN<{key_sent(legacy_file)}>")

    def test_opted_out_again(flag_files, legacy_file):
        print(f"OPTED<{key_sent(legacy_file)}>")
    """
)


def test_a_test_can_decide_from_its_flag_files(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=FLAG_FILE_TESTS)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    out = str(result.stdout)
    assert "DEFAULT<ep#acme>" in out and "AGAIN<ep#acme>" in out  # the plugin's composite
    assert out.count("OPTED<ep>") == 2  # the file's legacy, in both opted-out tests


def test_a_module_or_the_project_can_opt_out(pytester: pytest.Pytester) -> None:
    module = "import pytest\npytestmark = pytest.mark.usefixtures('flag_files')\n"
    pytester.makepyfile(test_module=module + FLAG_FILE_TESTS)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert str(result.stdout).count("<ep>") == 4

    pytester.makeini("[pytest]\naddopts = -p no:ai_agent_handler\n")
    pytester.makepyfile(test_module=FLAG_FILE_TESTS.replace("flag_files, ", ""))
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert str(result.stdout).count("<ep>") == 4
