"""The installed pytest plugin, seen from a user's project (a separate pytest run)."""

from __future__ import annotations

import os
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


# The plan's own tests (migration plan, section 7), as a provider-handler author copies them.
PLAN_TESTS = textwrap.dedent(
    """
    import logging
    from unittest.mock import patch

    from ai_agent_handler import AIAgentEventHandler, Utility

    logger = logging.getLogger("t")
    agent_dict = {}
    settings = {}

    def test_backward_compatibility_with_endpoint_id_only():
        handler = AIAgentEventHandler(logger, agent_dict, **settings)
        handler.endpoint_id = "aws-prod"
        handler.run = {
            "thread": {"thread_uuid": "thread-1"}, "run_uuid": "run-1", "updated_by": "user"
        }
        with patch.object(Utility, 'invoke_funct_on_aws_lambda') as mock_invoke:
            handler.invoke_async_funct("test_function", param1="value1")
            assert mock_invoke.call_args[0][1] == "aws-prod"

    def test_partition_key_assembly_in_lambda_calls():
        handler = AIAgentEventHandler(logger, agent_dict, **settings)
        handler.endpoint_id = "aws-prod"
        handler.part_id = "acme-corp"
        handler.run = {
            "thread": {"thread_uuid": "thread-1"}, "run_uuid": "run-1", "updated_by": "user"
        }
        with patch.object(Utility, 'invoke_funct_on_aws_lambda') as mock_invoke:
            handler.invoke_async_funct("test_function", param1="value1")
            assert mock_invoke.call_args[0][1] == "aws-prod#acme-corp"

    def test_send_data_to_stream_with_part_id():
        handler = AIAgentEventHandler(logger, agent_dict, **settings)
        handler.endpoint_id = "aws-prod"
        handler.part_id = "acme-corp"
        handler.connection_id = "conn-123"
        handler.run = {"run_uuid": "run-456"}
        with patch.object(Utility, 'invoke_funct_on_aws_lambda') as mock_invoke:
            handler.send_data_to_stream(
                index=0, data_format="text", chunk_delta="Hello world", is_message_end=False
            )
            call_args = mock_invoke.call_args
            assert call_args[0][1] == "aws-prod#acme-corp"
            assert call_args[0][2] == "send_data_to_stream"

    def test_legacy_code_compatibility():
        handler = AIAgentEventHandler(logger, agent_dict, **settings)
        handler.endpoint_id = "legacy-endpoint"
        handler.run = {"thread": {"thread_uuid": "t1"}, "run_uuid": "r1", "updated_by": "user"}
        with patch.object(Utility, 'invoke_funct_on_aws_lambda') as mock_invoke:
            handler.invoke_async_funct("legacy_function")
            assert mock_invoke.call_args[0][1] == "legacy-endpoint"
    """
)


def test_the_plans_tests_pass_with_no_aws_configuration(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A developer's machine with no AWS at all: no region, no credentials, no config files.
    for name in [n for n in os.environ if n.startswith(("AWS_", "BOTO_"))]:
        monkeypatch.delenv(name)
    missing = pytester.path / "no-aws"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(missing / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(missing / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    pytester.makepyfile(test_plan=PLAN_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
