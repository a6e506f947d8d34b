"""ai_agent_handler: the base event handler of LLM-provider agents.

The public names of the contract, and nothing else.
"""

from typing import TYPE_CHECKING, Any

from .ai_agent_handler import AIAgentEventHandler
from .invoker import Utility
from .partition_key import PartitionKeyError
from .rollout import FLAG_DOMAIN, FLAG_KEY

if TYPE_CHECKING:
    from .flag_provider import FlagFileProvider

__all__ = [
    "FLAG_DOMAIN",
    "FLAG_KEY",
    "AIAgentEventHandler",
    "FlagFileProvider",
    "PartitionKeyError",
    "Utility",
]


def __getattr__(name: str) -> Any:
    # FlagFileProvider brings flagd's evaluator (about 12 ms of imports): loaded on first use,
    # so importing the package costs little more than boto3.
    if name == "FlagFileProvider":
        from .flag_provider import FlagFileProvider

        return FlagFileProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
