"""What the package exports is what it means to export, and its errors form one tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import botocore.exceptions
import pytest

import ai_agent_handler
from ai_agent_handler import exceptions

#: The contract's names (shared/contract.md), the errors users catch, the results they read.
PUBLIC = {
    "AIAgentEventHandler",
    "AIAgentHandlerError",
    "FLAG_DOMAIN",
    "FLAG_KEY",
    "FlagConfigError",
    "FlagFileProvider",
    "InvocationError",
    "KeyDecision",
    "MCPError",
    "MCPToolError",
    "PartitionKeyError",
    "StreamDeliveryError",
    "StreamReport",
    "Utility",
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
def test_every_module_lists_what_it_defines(module: str) -> None:
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    if exported is None:  # packages whose __init__ only documents their modules
        assert mod.__file__ is not None and mod.__file__.endswith("__init__.py"), module
        return
    for name in exported:
        assert hasattr(mod, name), f"{module}.__all__ names {name!r}, which it lacks"


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
    for name in exceptions.__all__:
        error = getattr(exceptions, name)
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
