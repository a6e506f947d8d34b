"""ai_agent_handler: the base event handler of LLM-provider agents.

The public names: the contract's, the errors users catch, and the results they read.
"""

from typing import TYPE_CHECKING, Any

from .ai_agent_handler import AIAgentEventHandler
from .decision import FLAG_DOMAIN, FLAG_KEY, KeyDecision
from .exceptions import (
    AIAgentHandlerError,
    FlagConfigError,
    InvocationError,
    MCPError,
    MCPToolError,
    PartitionKeyError,
    StreamDeliveryError,
)
from .transport.invoke import Utility
from .transport.stream import StreamReport

if TYPE_CHECKING:
    from .flag_file.provider import FlagFileProvider

__all__ = [
    "FLAG_DOMAIN",
    "FLAG_KEY",
    "AIAgentEventHandler",
    "AIAgentHandlerError",
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
]


def __getattr__(name: str) -> Any:
    # FlagFileProvider brings flagd's evaluator (about 12 ms of imports): loaded on first use,
    # so importing the package costs little more than boto3.
    if name == "FlagFileProvider":
        from .flag_file.provider import FlagFileProvider

        return FlagFileProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
