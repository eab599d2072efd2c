"""Anthropic tools the upstream cannot run, and what happens to them (docs/protocol.md 3.7).

A tool whose ``type`` is set and is not ``"custom"`` is an Anthropic-defined tool: a *server tool*
that runs at Anthropic (``web_search_*``, ``web_fetch_*``, ``code_execution_*``...) or a schema-less
client tool (``bash_*``, ``text_editor_*``, ``computer_*``). A Chat Completions upstream has neither
the tools nor their schemas, so the gateway never forwards them -- and never drops them silently:

- when such tools are the request's only tools (and ``tool_choice`` is not ``none``), or
  ``tool_choice`` names one, the request is refused:
  400 ``server_tool_unavailable`` naming the tool. A model without the tool would answer from memory
  and the client would present that as, say, search results (Claude Code's WebSearch sends exactly
  such a request: one ``web_search_20250305`` tool); the refusal makes it report the tool unavailable;
- otherwise they are left out, the response says so in ``x-seedgate-dropped-tools`` (their names,
  comma-separated) and a one-line note at the end of the system prompt tells the model they are
  unavailable, so it does not pretend to have used them.
"""

from __future__ import annotations

from typing import Any

from app.dialects import tool_label
from app.dialects.anthropic.errors import AnthropicRequestError

UNAVAILABLE_CODE = "server_tool_unavailable"


def is_server_tool(tool: dict[str, Any]) -> bool:
    kind = tool.get("type")
    return kind is not None and kind != "custom"


def tool_name(tool: dict[str, Any]) -> str:
    name = tool.get("name")
    kind = tool.get("type")
    return tool_label(name if isinstance(name, str) and name else kind if isinstance(kind, str) else "tool")


def refuse_if_needed(dropped: list[str], kept: int, forced: str | None) -> None:
    """Raise when the request cannot be served without a dropped tool (rules in the module docstring)."""
    if not dropped:
        return
    if forced is not None and forced in dropped:
        unusable = forced
    elif kept == 0:
        unusable = dropped[0]
    else:
        return
    raise AnthropicRequestError(
        f"The tool '{unusable}' is not available through this gateway: its upstream model cannot run "
        "Anthropic server tools (web search, web fetch, code execution...).",
        "tools",
        code=UNAVAILABLE_CODE,
    )


def system_note(dropped: list[str]) -> str:
    names = ", ".join(dropped)
    return (
        f"Note: the tools {names} are not available in this environment and were removed. Do not claim to have "
        "used them; if the task needs them, say that they are unavailable."
    )
