"""Anthropic ``MessageCreateParams`` -> OpenAI Chat Completions request body (docs/protocol.md 3.2, 3.7).

``messages_to_chat`` validates and maps the top-level fields; the ``messages`` array is handled by
``app.dialects.anthropic.messages``. Field rules:

    system + role:"system" messages   one leading system message, texts joined with "\\n\\n"
    max_tokens (required, > 0)         max_completion_tokens (the caller clamps it to the model limit)
    stop_sequences                     stop
    temperature (0..1), top_p (0..1)   copied; top_k dropped
    metadata.user_id                   user
    tools                              function tools; server tools (``type`` set and not "custom") are
                                       refused or left out, never silently (``server_tools``)
    tool_choice auto/any/tool/none     auto / required / {"type":"function",...} / none;
                                       disable_parallel_tool_use -> parallel_tool_calls: false
    thinking enabled/disabled/adaptive thinking {"type": enabled/disabled/auto}; absent -> nothing sent
    output_config.effort               reasoning_effort (xhigh and max -> high)
    output_config.format json_schema   response_format json_schema named "output"
    output_format (older SDKs)         the same as output_config.format
    stream                             stream (+ stream_options.include_usage, the translator needs usage)

Claude Code starts its system prompt with an ``x-anthropic-billing-header: cc_version=...; cch=...;``
line that changes between requests; left in, it would be the first bytes of the upstream prompt and
defeat the upstream's prefix cache on every turn. Such leading lines are removed from system texts.

``model`` is returned as the client sent it. Unknown top-level fields (``context_management``,
``container``, ``service_tier``, ``mcp_servers``...) are ignored, never an error. A ``null`` optional
field counts as absent.
"""

from __future__ import annotations

import re
from typing import Any

from app.dialects import upstream_tool_name
from app.dialects.anthropic.errors import AnthropicRequestError
from app.dialects.anthropic.messages import convert_messages, invalid, text_block
from app.dialects.anthropic.server_tools import is_server_tool, refuse_if_needed, system_note, tool_name

_THINKING = {"enabled": "enabled", "disabled": "disabled", "adaptive": "auto"}
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
_BILLING_LINES = re.compile(r"\A(?:x-anthropic-billing-header:[^\n]*(?:\n|\Z))+")


MAX_TOOL_NAME = 128  # Anthropic's limit; chat's is 64 (longer ones go upstream as upstream_tool_name)


def messages_to_chat(body: Any) -> dict[str, Any]:
    """Validate an Anthropic Messages body; return the equivalent Chat Completions body."""
    return translate(body)[0]


def translate(body: Any) -> tuple[dict[str, Any], list[str]]:
    """Validate an Anthropic Messages body; return the equivalent Chat Completions body and the names of
    the tools left out (``server_tools``).

    Raises ``AnthropicRequestError`` (with ``param``) for a body the upstream could not serve.
    """
    if not isinstance(body, dict):
        raise AnthropicRequestError("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("model", "must be a non-empty string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise invalid("max_tokens", "field required")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise invalid("max_tokens", "must be a positive integer")

    system = _system(body.get("system"))
    hoisted, messages = convert_messages(body.get("messages"))
    chat: dict[str, Any] = {"model": model, "messages": messages, "max_completion_tokens": max_tokens}
    dropped = _tools(body.get("tools"), body.get("tool_choice"), chat)
    note = [system_note(dropped)] if dropped else []
    system_text = "\n\n".join(text for text in (*system, *hoisted, *note) if text)
    if system_text:
        messages.insert(0, {"role": "system", "content": system_text})
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise invalid("stream", "must be a boolean")
        chat["stream"] = stream
        if stream:
            chat["stream_options"] = {"include_usage": True}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not _is_number(value) or not 0 <= value <= 1:
                raise invalid(name, "must be a number between 0 and 1")
            chat[name] = value
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise invalid("stop_sequences", "must be an array of strings")
        if stop:
            chat["stop"] = stop
    user = _user_id(body.get("metadata"))
    if user is not None:
        chat["user"] = user
    thinking = body.get("thinking")
    if thinking is not None:
        chat["thinking"] = {"type": _thinking_type(thinking)}
    _output_config(body.get("output_config"), chat)
    legacy = body.get("output_format")  # the earlier place of output_config.format, still sent by older SDKs
    if legacy is not None:
        if isinstance(body.get("output_config"), dict) and body["output_config"].get("format") is not None:
            raise invalid("output_format", "give either output_format or output_config.format, not both")
        _output_config({"format": legacy}, chat, where="output_format")
    return chat, dropped


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _system(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [_BILLING_LINES.sub("", raw)]
    if not isinstance(raw, list):
        raise invalid("system", "must be a string or an array of text blocks")
    texts: list[str] = []
    for j, block in enumerate(raw):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise invalid(f"system.{j}", "must be a text block")
        texts.append(_BILLING_LINES.sub("", text_block(block, f"system.{j}")))
    return texts


def _user_id(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise invalid("metadata", "must be an object")
    user_id = metadata.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise invalid("metadata.user_id", "must be a string")
    return user_id or None


def _tools(raw_tools: Any, raw_choice: Any, chat: dict[str, Any]) -> list[str]:
    """Set the function tools and tool_choice on ``chat``; return the names of the tools left out."""
    tools: list[dict[str, Any]] = []
    dropped: list[str] = []
    if raw_tools is not None:
        if not isinstance(raw_tools, list):
            raise invalid("tools", "must be an array of tool definitions")
        for i, tool in enumerate(raw_tools):
            function = _function(tool, f"tools.{i}")
            if function is not None:
                tools.append({"type": "function", "function": function})
            elif tool_name(tool) not in dropped:
                dropped.append(tool_name(tool))
    choice: Any = None
    parallel: bool | None = None
    if raw_choice is not None:
        choice, parallel = _tool_choice(raw_choice)
    if choice != "none":
        forced = raw_choice.get("name") if isinstance(choice, dict) else None
        refuse_if_needed(dropped, len(tools), forced if isinstance(forced, str) else None)
    # Without function tools a tool_choice would only make the upstream reject the request.
    if tools:
        chat["tools"] = tools
        if choice is not None:
            chat["tool_choice"] = choice
        if parallel is False:
            chat["parallel_tool_calls"] = False
    return dropped


def tool_names(body: dict[str, Any]) -> dict[str, str]:
    """The client's tool names that went upstream under another name (longer than chat allows, or with
    other characters): upstream name -> the client's. For a body ``translate`` accepted."""
    names: dict[str, str] = {}
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        name = tool.get("name") if isinstance(tool, dict) and not is_server_tool(tool) else None
        if isinstance(name, str) and (alias := upstream_tool_name(name)) != name:
            names[alias] = name
    return names


def _function(tool: Any, param: str) -> dict[str, Any] | None:
    if not isinstance(tool, dict):
        raise invalid(param, "must be an object")
    if is_server_tool(tool):
        return None  # web_search_20250305, ... run at Anthropic: the upstream has no such thing
    name = tool.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_TOOL_NAME:
        raise invalid(f"{param}.name", f"must be a non-empty string of at most {MAX_TOOL_NAME} characters")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise invalid(f"{param}.input_schema", "must be a JSON schema object")
    function: dict[str, Any] = {"name": upstream_tool_name(name)}  # mapped back: tool_names()
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise invalid(f"{param}.description", "must be a string")
        function["description"] = description
    function["parameters"] = schema
    return function


def _tool_choice(raw: Any) -> tuple[Any, bool | None]:
    if not isinstance(raw, dict):
        raise invalid("tool_choice", "must be an object")
    kind = raw.get("type")
    choice: Any
    if kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.name", "must be a non-empty string")
        choice = {"type": "function", "function": {"name": upstream_tool_name(name)}}
    elif isinstance(kind, str) and kind in _TOOL_CHOICE:
        choice = _TOOL_CHOICE[kind]
    else:
        raise invalid("tool_choice.type", "must be one of 'auto', 'any', 'tool', 'none'")
    disable = raw.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise invalid("tool_choice.disable_parallel_tool_use", "must be a boolean")
    return choice, (False if disable else None)


def _thinking_type(raw: Any) -> str:
    if not isinstance(raw, dict):
        raise invalid("thinking", "must be an object")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in _THINKING:
        raise invalid("thinking.type", "must be one of 'enabled', 'disabled', 'adaptive'")
    budget = raw.get("budget_tokens")
    # The budget itself is dropped (Seed has no budget knob) but a malformed one is still the client's bug.
    if kind == "enabled" and budget is not None and (not _is_int(budget) or budget < 1):
        raise invalid("thinking.budget_tokens", "must be a positive integer")
    return _THINKING[kind]


def _output_config(raw: Any, chat: dict[str, Any], *, where: str = "output_config.format") -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise invalid("output_config", "must be an object")
    effort = raw.get("effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in _EFFORT:
            raise invalid("output_config.effort", "must be one of 'low', 'medium', 'high', 'xhigh', 'max'")
        chat["reasoning_effort"] = _EFFORT[effort]
    output_format = raw.get("format")
    if output_format is not None:
        if not isinstance(output_format, dict) or output_format.get("type") != "json_schema":
            raise invalid(f"{where}.type", "must be 'json_schema'")
        schema = output_format.get("schema")
        if not isinstance(schema, dict):
            raise invalid(f"{where}.schema", "must be a JSON schema object")
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
