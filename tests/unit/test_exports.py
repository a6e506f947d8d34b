"""The public surface is small and stated, and the errors form one tree.

Public: the names of ``ai_agent_handler.__all__``, the module the contract names
(``ai_agent_handler.ai_agent_handler``), the receiver helper and the pytest plugin. Every
other module is internal and lists no names.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import botocore.exceptions
import pytest

import ai_agent_handler
from ai_agent_handler import exceptions

#: The contract's names (shared/contract.md), the errors users catch, the results they read.
PUBLIC = {
    "AIAgentEventHandler",
    "AIAgentHandlerError",
    "BackfillError",
    "ConflictError",
    "FLAG_DOMAIN",
    "FLAG_KEY",
    "FlagConfigError",
    "FlagEditError",
    "FlagFileError",
    "FlagFileProvider",
    "InvocationError",
    "KeyDecision",
    "MCPError",
    "MCPToolError",
    "MetricsError",
    "PartitionKeyError",
    "RampError",
    "StoreError",
    "StreamDeliveryError",
    "StreamReport",
    "Utility",
}
#: The modules whose names are public besides the package's own.
PUBLIC_MODULES = {
    "ai_agent_handler",
    "ai_agent_handler.ai_agent_handler",
    "ai_agent_handler.ops.backfill_io",
    "ai_agent_handler.pytest_plugin",
    "ai_agent_handler.receiver",
}


def _modules() -> list[str]:
    prefix = "ai_agent_handler."
    return ["ai_agent_handler"] + [
        info.name for info in pkgutil.walk_packages(ai_agent_handler.__path__, prefix)
    ]


def test_the_package_exports_exactly_the_public_names() -> None:
    assert set(ai_agent_handler.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(ai_agent_handler, name) is not None, name


def test_contract_values() -> None:
    assert ai_agent_handler.FLAG_KEY == "composite-partition-key"
    assert ai_agent_handler.FLAG_DOMAIN == "ai_agent_handler"
    assert ai_agent_handler.AIAgentEventHandler.__module__ == "ai_agent_handler.ai_agent_handler"
    assert callable(ai_agent_handler.Utility.invoke_funct_on_aws_lambda)
    assert issubclass(ai_agent_handler.PartitionKeyError, ValueError)


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        ai_agent_handler.Nope  # noqa: B018


@pytest.mark.parametrize("module", _modules())
def test_public_modules_list_what_they_define_and_internal_ones_list_nothing(module: str) -> None:
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    if module not in PUBLIC_MODULES:
        assert exported is None, f"{module} is internal: it lists no public names"
        return
    assert exported, module
    for name in exported:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it lacks"


def test_every_error_a_docstring_names_is_importable_from_the_package() -> None:
    named = set()
    for module in _modules():
        text = inspect.getsource(importlib.import_module(module))
        named |= set(re.findall(r":class:`~ai_agent_handler\.(\w+)`", text))
    assert named
    assert named <= set(ai_agent_handler.__all__), named - set(ai_agent_handler.__all__)


def test_every_error_is_defined_in_the_exceptions_module_under_one_base() -> None:
    defined = [
        (module, obj)
        for module in _modules()
        for _, obj in inspect.getmembers(importlib.import_module(module), inspect.isclass)
        if issubclass(obj, BaseException)
        and obj.__module__.startswith("ai_agent_handler")
        and not obj.__name__.startswith("_")
        # Private modules' plumbing (the CLI's exit signal) is no public error; receiver.py
        # imports nothing of the package, so that a receiver can copy the one file.
        and not any(part.startswith("_") for part in obj.__module__.split("."))
        and obj.__module__ != "ai_agent_handler.receiver"
    ]
    assert defined
    assert {obj.__module__ for _, obj in defined} == {"ai_agent_handler.exceptions"}
    for name, error in inspect.getmembers(exceptions, inspect.isclass):
        if error.__module__ == exceptions.__name__ and not name.startswith("_"):
            assert issubclass(error, exceptions.AIAgentHandlerError), name
            assert name in (exceptions.__doc__ or ""), f"{name} missing from the drawn tree"


@pytest.mark.parametrize(
    ("error", "also"),
    [
        (exceptions.PartitionKeyError, ValueError),
        (exceptions.FlagConfigError, ValueError),
        (exceptions.FlagFileError, ValueError),
        (exceptions.FlagEditError, ValueError),
        (exceptions.InvocationError, RuntimeError),
        (exceptions.StreamDeliveryError, RuntimeError),
        (exceptions.SourceNotFound, exceptions.FlagSourceError),
        (exceptions.SourceAccessDenied, exceptions.FlagSourceError),
        (exceptions.SourceUnavailable, exceptions.FlagSourceError),
        (exceptions.ConflictError, exceptions.StoreError),
    ],
)
def test_the_tree(error: type[Exception], also: type[Exception]) -> None:
    assert issubclass(error, also)
    assert issubclass(error, exceptions.AIAgentHandlerError)
    assert not issubclass(error, botocore.exceptions.BotoCoreError)
