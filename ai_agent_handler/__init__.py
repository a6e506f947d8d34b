"""ai_agent_handler: the base event handler of LLM-provider agents.

The public names of the contract, and nothing else.
"""

from .ai_agent_handler import AIAgentEventHandler
from .flag_provider import FlagFileProvider
from .invoker import Utility
from .partition_key import PartitionKeyError
from .rollout import FLAG_DOMAIN, FLAG_KEY

__all__ = [
    "FLAG_DOMAIN",
    "FLAG_KEY",
    "AIAgentEventHandler",
    "FlagFileProvider",
    "PartitionKeyError",
    "Utility",
]
