"""The model's tools from MCP servers (the agent's ``mcp_servers``).

:class:`Toolbox` is what a handler builds from its agent: it adds every server's tools to
``agent["configuration"]["tools"]`` in the model's format and answers ``get_function``.
Requests go over the official ``mcp`` SDK (:mod:`.session`, imported on first request):
one persistent session per server and headers in this process, tool lists cached for
``tools_ttl``. :func:`warm` lists (and connects to) servers ahead of the first handler, for
example at a Lambda's start-up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import MCPConfigError, MCPProtocolError
from .formats import LLM_NAMES, export, native_entry
from .servers import Route, ServerConfig, not_found, parse_servers, routes

if TYPE_CHECKING:
    from .session import ToolResult, _Listing

ToolFunction = Callable[..., "ToolResult"]
LOGGER = logging.getLogger("ai_agent_handler.tools")


def _listing(server: ServerConfig) -> _Listing:
    from . import session  # the SDK, httpx and anyio load on the first use only

    return session.list_tools(server)


def _offered(server: ServerConfig, llm_name: str | None) -> tuple[str, list[tuple[str, str]]]:
    """The server's tools as the model sees them: (exported JSON, [(name, server's name)]).

    Raises :class:`MCPConfigError` when ``allow_tools`` / ``block_tools`` name a tool the
    server does not list. A tool whose schema cannot be put in the model's format (a Gemini
    schema past ``MAX_SCHEMA_NODES``) is left out with a warning.
    """
    listing = _listing(server)
    server.check_names(spec.name for spec in listing.tools)
    memo_key = (llm_name, server.allow_tools, server.block_tools, server.tool_prefix)
    found = listing.memo.get(memo_key)
    if found is None:
        entries: list[dict[str, Any]] = []
        names: list[tuple[str, str]] = []
        for spec, remote in server.offered(listing.tools):
            if llm_name:
                try:
                    entries.extend(export(llm_name, [spec]))
                except MCPProtocolError as exc:  # a schema past MAX_SCHEMA_NODES
                    LOGGER.warning(
                        "MCP server %r: tool %r is left out of the model's tools: %s",
                        server.name,
                        remote,
                        exc,
                    )
                    continue
            names.append((spec.name, remote))
        found = listing.memo[memo_key] = (json.dumps(entries) if llm_name else "", names)
    return found


class Toolbox:
    """One handler's MCP tools, set up from its agent the way upstream's constructor does.

    - ``configuration["mcp_llm_native"]`` truthy: it is removed and one native entry per
      server is appended (the provider calls the servers itself); no request is made.
    - Otherwise each server's tools are appended in the format of ``llm["llm_name"]``;
      a cold cache costs one listing per server and process, a warm one none.

    The agent is changed only when setup succeeds, and only ``configuration["tools"]`` and
    ``mcp_llm_native``.
    """

    def __init__(self, agent: Mapping[str, Any], logger: logging.Logger) -> None:
        self.logger = logger
        self.servers: list[ServerConfig] = parse_servers(agent["mcp_servers"])
        configuration = agent.get("configuration")
        if not isinstance(configuration, MutableMapping):
            raise MCPConfigError("agent['configuration'] must be a dict when 'mcp_servers' is set")
        tools = configuration.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise MCPConfigError("agent['configuration']['tools'] must be a list")
        self._routes: dict[str, Route] | None = None
        if configuration.get("mcp_llm_native", False):
            added = [
                native_entry(s.name, s.base_url, _given_headers(agent, i))
                for i, s in enumerate(self.servers)
            ]
        else:
            llm = agent.get("llm")
            llm_name = llm.get("llm_name") if isinstance(llm, Mapping) else None
            if llm_name not in LLM_NAMES:
                raise MCPConfigError(f"Unsupported LLM name: {llm_name}")
            proxy = configuration.get("mcp_proxy") if llm_name == "travrse" else None
            if proxy is not None:
                proxy = _proxy(proxy)
            offered = [(server, _offered(server, llm_name)) for server in self.servers]
            self._routes = self._table(offered)
            added = [tool for _, (exported, _) in offered for tool in json.loads(exported)]
            if proxy is not None:
                base_url, headers = proxy
                for tool in added:  # as upstream's base class gives travrse its tools
                    tool["config"] = {
                        "url": f"{base_url}/{tool['name']}",
                        "method": "POST",
                        "headers": dict(headers),
                    }
        configuration.pop("mcp_llm_native", None)
        if tools is None:
            configuration["tools"] = added
        else:
            tools.extend(added)

    @staticmethod
    def _table(
        offered: Sequence[tuple[ServerConfig, tuple[str, list[tuple[str, str]]]]],
    ) -> dict[str, Route]:
        return routes((server, names) for server, (_, names) in offered)

    def get_function(self, name: str) -> ToolFunction:
        """A function of the tool's arguments that calls ``name`` on the server offering it.

        ``fn(**arguments)`` returns the result's content, a list of dicts such as
        ``[{"type": "text", "text": "5"}]`` (``.structured_content`` holds the structured
        part). Raises ``MCPToolNotFound`` ("Function <name> not found in MCP tools") here for
        a name no server offers, and from the call ``MCPToolError`` for an error result and
        the other ``MCPError`` kinds for timeouts, connection and protocol failures.
        """
        if self._routes is None:  # native setup listed nothing: list now
            self._routes = self._table([(s, _offered(s, None)) for s in self.servers])
        route = self._routes.get(name)
        if route is None:
            raise not_found(name)
        server, remote, logger = route.server, route.tool, self.logger

        def call(**arguments: Any) -> ToolResult:
            from . import session

            logger.info("Calling MCP tool %s on %s", remote, server.name)
            return session.call_tool(server, remote, arguments)

        call.__name__ = call.__qualname__ = name
        return call


def _proxy(proxy: Any) -> tuple[str, Mapping[str, Any]]:
    """A travrse agent's ``configuration["mcp_proxy"]``, checked: (base_url, headers).

    Travrse calls each tool itself over HTTP: every tool gets ``config = {"url":
    f"{base_url}/{name}", "method": "POST", "headers": headers}`` (the travrse handler
    reads ``tool["config"]["url"]`` and formats ``{endpoint_id}`` into it).
    """
    where = "agent['configuration']['mcp_proxy']"
    if not isinstance(proxy, Mapping):
        raise MCPConfigError(f"{where} must be a dict with 'base_url' and 'headers'")
    base_url = proxy.get("base_url")
    headers = proxy.get("headers", {})
    if not isinstance(base_url, str) or not base_url:
        raise MCPConfigError(f"{where}['base_url'] must be a non-empty string")
    if not isinstance(headers, Mapping):
        raise MCPConfigError(f"{where}['headers'] must be a dict")
    return base_url, headers


def _given_headers(agent: Mapping[str, Any], index: int) -> dict[str, str]:
    # Native entries carry the headers as the agent gave them (a copy), not bearer_token.
    headers = agent["mcp_servers"][index]["setting"].get("headers") or {}
    return dict(headers)


def warm(mcp_servers: Sequence[Mapping[str, Any]]) -> None:
    """Connect to each server and cache its tool list now (for example at Lambda start-up).

    Handlers created afterwards for the same servers and headers make no request until the
    lists expire. Raises the first server's ``MCPError`` when one cannot be listed.
    """
    for server in parse_servers(mcp_servers):
        _listing(server)
