"""The agent's ``mcp_servers`` entries, checked (pure), and which server answers which name.

An entry is ``{"name": str, "setting": {...}}``. ``setting`` keys:

==================  =======================================================================
``base_url``        the server's Streamable HTTP endpoint (``http://`` or ``https://``)
``headers``         sent on every request (tenant routing, credentials); optional
``bearer_token``    sent as ``Authorization: Bearer <token>``; optional
``connect_timeout`` seconds to connect and initialize a session (default 10)
``list_timeout``    seconds for listing the tools (default 30)
``call_timeout``    seconds for one tool call (default 60)
``tools_ttl``       seconds a listed tool set is reused in this process (default 600)
``tools_max_stale`` seconds past ``tools_ttl`` that the last good list is still served while
                    the server cannot be listed (default 86400)
``allow_tools``     only these tool names are offered to the model; optional
``block_tools``     these tool names are never offered; optional
``tool_prefix``     prepended to each tool name the model sees (for two servers that offer
                    the same name); optional
==================  =======================================================================

Any other key is refused (:class:`MCPConfigError` naming the nearest valid key), so a typo
such as ``call_timout`` never passes for the default.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..exceptions import MCPConfigError, MCPToolNotFound
from .formats import ToolSpec

DEFAULTS = {
    "connect_timeout": 10.0,
    "list_timeout": 30.0,
    "call_timeout": 60.0,
    "tools_ttl": 600.0,
    "tools_max_stale": 86400.0,
}
#: Every key a ``setting`` may hold.
SETTING_KEYS = frozenset(
    {"base_url", "headers", "bearer_token", "allow_tools", "block_tools", "tool_prefix", *DEFAULTS}
)


class ServerKey(NamedTuple):
    """What makes two entries the same server to this process: one session, one tool list."""

    base_url: str
    headers: tuple[tuple[str, str], ...]  # lower-cased names, sorted; Authorization included


@dataclass(frozen=True)
class ServerConfig:
    """One checked ``mcp_servers`` entry."""

    name: str
    base_url: str
    headers: tuple[tuple[str, str], ...]  # as given, bearer_token applied
    connect_timeout: float = DEFAULTS["connect_timeout"]
    list_timeout: float = DEFAULTS["list_timeout"]
    call_timeout: float = DEFAULTS["call_timeout"]
    tools_ttl: float = DEFAULTS["tools_ttl"]
    tools_max_stale: float = DEFAULTS["tools_max_stale"]
    allow_tools: frozenset[str] | None = None
    block_tools: frozenset[str] = frozenset()
    tool_prefix: str = ""

    @property
    def key(self) -> ServerKey:
        return ServerKey(self.base_url, tuple(sorted((k.lower(), v) for k, v in self.headers)))

    def offered(self, tools: Iterable[ToolSpec]) -> list[tuple[ToolSpec, str]]:
        """The tools the model sees (allow/block lists, prefix) with each one's server name."""
        return [
            (tool._replace(name=self.tool_prefix + tool.name), tool.name)
            for tool in tools
            if (self.allow_tools is None or tool.name in self.allow_tools)
            and tool.name not in self.block_tools
        ]

    def check_names(self, listed: Iterable[str]) -> None:
        """Raise :class:`MCPConfigError` when ``allow_tools`` or ``block_tools`` names a tool
        the server does not list (a typo would otherwise hide or expose tools silently)."""
        names = set(listed)
        for key, given in (("allow_tools", self.allow_tools), ("block_tools", self.block_tools)):
            for name in sorted((given or frozenset()) - names):
                raise MCPConfigError(
                    f"MCP server {self.name!r}: '{key}' names {name!r}, which the server does "
                    f"not offer{_nearest(name, names)}",
                    server=self.name,
                    tool=name,
                )


class Route(NamedTuple):
    """Where a name the model calls goes: the server and the tool's name there."""

    server: ServerConfig
    tool: str


def routes(offered: Iterable[tuple[ServerConfig, Iterable[tuple[str, str]]]]) -> dict[str, Route]:
    """Name -> route, from each server's (name the model sees, name on the server) pairs.

    A name offered by two servers is refused with :class:`MCPConfigError`.
    """
    table: dict[str, Route] = {}
    for server, names in offered:
        for name, remote in names:
            other = table.get(name)
            if other is not None:
                raise MCPConfigError(
                    f"MCP tool {name!r} is offered by servers {other.server.name!r} and "
                    f"{server.name!r}: set 'tool_prefix' in one server's setting, or list the "
                    "tool in its 'block_tools'",
                    server=server.name,
                    tool=name,
                )
            table[name] = Route(server, remote)
    return table


def not_found(name: str, detail: str = "") -> MCPToolNotFound:
    """Upstream's error for a name no server offers."""
    return MCPToolNotFound(f"Function {name} not found in MCP tools{detail}", tool=name)


def _nearest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_servers(entries: Any) -> list[ServerConfig]:
    """``agent["mcp_servers"]`` checked; raises :class:`MCPConfigError` naming the entry."""
    if not isinstance(entries, Sequence) or isinstance(entries, (str, bytes)):
        raise MCPConfigError(
            f"agent['mcp_servers'] must be a list of servers, not {type(entries).__name__}"
        )
    return [_parse_entry(i, entry) for i, entry in enumerate(entries)]


def _parse_entry(index: int, entry: Any) -> ServerConfig:
    where = f"mcp_servers[{index}]"
    if not isinstance(entry, Mapping):
        raise MCPConfigError(f"{where} must be a dict with 'name' and 'setting'")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise MCPConfigError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({name!r})"
    setting = entry.get("setting")
    if not isinstance(setting, Mapping):
        raise MCPConfigError(f"{where}: 'setting' must be a dict with 'base_url'", server=name)

    def fail(problem: str) -> MCPConfigError:
        return MCPConfigError(f"{where}: {problem}", server=name)

    for key in setting:
        if key not in SETTING_KEYS:
            hint = (
                _nearest(str(key), SETTING_KEYS)
                or f" (the keys: {', '.join(sorted(SETTING_KEYS))})"
            )
            raise fail(f"unknown setting {key!r}{hint}")

    base_url = setting.get("base_url")
    if not isinstance(base_url, str) or not base_url.lower().startswith(("http://", "https://")):
        raise fail(f"'base_url' must be an http:// or https:// URL, not {base_url!r}")
    headers = setting.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise fail("'headers' must be a dict of strings")
    merged = {k: v for k, v in headers.items()}
    token = setting.get("bearer_token")
    if token is not None:
        if not isinstance(token, str) or not token:
            raise fail("'bearer_token' must be a non-empty string")
        merged = {k: v for k, v in merged.items() if k.lower() != "authorization"}
        merged["Authorization"] = f"Bearer {token}"
    for key, value in merged.items():
        if any(c in key + value for c in "\r\n\0"):
            raise fail(f"header {key!r} holds a line break or NUL")

    numbers: dict[str, float] = {}
    for key, default in DEFAULTS.items():
        value = setting.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value <= 0
        ):
            raise fail(f"'{key}' must be a positive number of seconds, not {value!r}")
        numbers[key] = float(value)

    def names(key: str) -> frozenset[str] | None:
        value = setting.get(key)
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise fail(f"'{key}' must be a list of tool names")
        items = list(value)
        if not all(isinstance(v, str) for v in items):
            raise fail(f"'{key}' must be a list of tool names")
        return frozenset(items)

    prefix = setting.get("tool_prefix", "")
    if not isinstance(prefix, str):
        raise fail("'tool_prefix' must be a string")
    return ServerConfig(
        name=name,
        base_url=base_url,
        headers=tuple(merged.items()),
        allow_tools=names("allow_tools"),
        block_tools=names("block_tools") or frozenset(),
        tool_prefix=prefix,
        **numbers,
    )
