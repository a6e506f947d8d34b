"""ai_agent_handler: the base event handler of LLM-provider agents.

The public names: the contract's, the errors users catch, and the results they read.
"""

from typing import TYPE_CHECKING, Any

from .ai_agent_handler import AIAgentEventHandler
from .decision import KeyDecision
from .exceptions import (
    AIAgentHandlerError,
    BackfillError,
    ConflictError,
    FlagConfigError,
    FlagEditError,
    FlagFileError,
    InvocationError,
    MCPError,
    MCPToolError,
    MetricsError,
    PartitionKeyError,
    RampError,
    StoreError,
    StreamDeliveryError,
)
from .settings import FLAG_DOMAIN, FLAG_KEY
from .transport.invoke import Utility
from .transport.stream import StreamReport

if TYPE_CHECKING:
    from .flag_file.provider import FlagFileProvider

__all__ = [
    "FLAG_DOMAIN",
    "FLAG_KEY",
    "AIAgentEventHandler",
    "AIAgentHandlerError",
    "BackfillError",
    "ConflictError",
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
]


def __getattr__(name: str) -> Any:
    # FlagFileProvider brings flagd's evaluator (about 12 ms of imports): loaded on first use,
    # so importing the package costs little more than boto3.
    if name == "FlagFileProvider":
        from .flag_file.provider import FlagFileProvider

        return FlagFileProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
