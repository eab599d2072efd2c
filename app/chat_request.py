"""Validation of ``POST /v1/chat/completions`` bodies and the allow-list of what goes upstream.

The upstream body is rebuilt from ``FIELDS`` only: a client can never choose the destination or
smuggle provider options (``api_base``, headers...). Unknown fields are dropped silently, as many
clients send fields of newer API versions -- except those asking for what the upstream cannot do
(``_REFUSED``: legacy ``functions``, audio output, web search), a 400 rather than a different answer.
With both ``max_completion_tokens`` and ``max_tokens``, the first is the limit (Ark refuses both).
Every check failure is an ``InvalidRequest`` (400) whose ``param`` names the field; nothing here can
raise anything else.

Rewrites: role ``developer`` -> ``system`` (Ark may refuse it); ``reasoning_effort`` ``none`` ->
``minimal`` and ``xhigh``/``max`` -> ``high`` (Ark's range). ``reasoning_content`` in assistant
messages is kept: Seed 2.0 tool loops need it sent back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidRequest

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EFFORT = {"none": "minimal", "minimal": "minimal", "low": "low", "medium": "medium", "high": "high"}
EFFORT |= {"xhigh": "high", "max": "high"}
MAX_N = 16
MAX_TOKENS = 2**31 - 1  # the largest max_tokens accepted


@dataclass(slots=True)
class ChatRequest:  # not frozen: a frozen dataclass's __init__ costs ~0.6 us more, on every request
    model: str
    body: dict[str, Any]  # validated fields to forward, without model/stream/stream_options/max tokens
    stream: bool
    include_usage: bool
    n: int
    max_output_tokens: int | None  # what the client asked for, if anything
    response_headers: dict[str, str] = field(default_factory=dict)  # the dialect's notes to the client
    context: Any = None  # a dialect's own per-request facts, opaque to the pipeline (``Reply.context``)


def _fail(message: str, param: str | None) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _number(name: str, lo: float, hi: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise _fail(f"'{name}' must be a number between {lo:g} and {hi:g}.", name)
        return value

    return check


def integer(name: str, lo: int, hi: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _fail(f"'{name}' must be an integer between {lo} and {hi}.", name)
        return value

    return check


def _of_type(name: str, kind: type | tuple[type, ...], label: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise _fail(f"'{name}' must be {label}.", name)
        if not isinstance(value, kind):
            raise _fail(f"'{name}' must be {label}.", name)
        return value

    return check


def _stop(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value):
        return value
    raise _fail("'stop' must be a string or a list of at most 4 strings.", "stop")


def _logit_bias(value: Any) -> Any:
    if not isinstance(value, dict):
        raise _fail("'logit_bias' must be an object mapping token ids to numbers.", "logit_bias")
    check = _number("logit_bias", -100, 100)
    for bias in value.values():
        check(bias)
    return value


def _tools(value: Any) -> Any:
    if not isinstance(value, list):
        raise _fail("'tools' must be a list.", "tools")
    for i, tool in enumerate(value):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise _fail("Each tool must be {'type': 'function', 'function': {...}}.", f"tools[{i}]")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _fail("Tool names must match ^[a-zA-Z0-9_-]{1,64}$.", f"tools[{i}].function.name")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            raise _fail("'parameters' must be a JSON Schema object.", f"tools[{i}].function.parameters")
    return value


def _tool_choice(value: Any) -> Any:
    if value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "allowed_tools":
        allowed = value.get("allowed_tools")
        if not isinstance(allowed, dict) or allowed.get("mode", "auto") not in ("auto", "required"):
            raise _fail("'tool_choice.allowed_tools' needs a 'mode' of auto or required.", "tool_choice.allowed_tools")
        if not isinstance(allowed.get("tools"), list):
            raise _fail("'tool_choice.allowed_tools.tools' must be an array of tools.", "tool_choice.allowed_tools")
        return value  # applied to the tools once they are read: _allowed_tools
    fn = value.get("function") if isinstance(value, dict) else None
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(fn, dict):
        if isinstance(fn.get("name"), str):
            return value
    raise _fail("'tool_choice' must be none, auto, required or {'type': 'function', ...}.", "tool_choice")


def _allowed_tools(forward: dict[str, Any], allowed: dict[str, Any]) -> None:
    """``tool_choice: allowed_tools`` as every upstream understands it: only the listed tools go, and its
    ``mode`` is the ``tool_choice`` (the model may call no other tool)."""
    names = set()
    for tool in allowed["tools"]:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    kept = [tool for tool in forward.get("tools", ()) if tool["function"]["name"] in names]
    if not kept:
        raise _fail(
            "'tool_choice.allowed_tools.tools' allows none of the request's tools.", "tool_choice.allowed_tools"
        )
    forward["tools"] = kept
    forward["tool_choice"] = allowed.get("mode", "auto")


def _response_format(value: Any) -> Any:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return value
    if kind == "json_schema":
        schema = value.get("json_schema")
        if isinstance(schema, dict) and isinstance(schema.get("name"), str):
            return value
        raise _fail("'response_format.json_schema' needs a 'name'.", "response_format.json_schema")
    raise _fail("'response_format.type' must be text, json_object or json_schema.", "response_format")


def _reasoning_effort(value: Any) -> Any:
    if isinstance(value, str) and value in EFFORT:
        return EFFORT[value]
    raise _fail("'reasoning_effort' must be one of none, minimal, low, medium, high, xhigh, max.", "reasoning_effort")


def _thinking(value: Any) -> Any:
    if isinstance(value, dict) and value.get("type") in ("enabled", "disabled", "auto"):
        return {"type": value["type"]}
    raise _fail("'thinking' must be {'type': 'enabled' | 'disabled' | 'auto'}.", "thinking")


FIELDS: dict[str, Callable[[Any], Any]] = {
    "temperature": _number("temperature", 0, 2),
    "top_p": _number("top_p", 0, 1),
    "frequency_penalty": _number("frequency_penalty", -2, 2),
    "presence_penalty": _number("presence_penalty", -2, 2),
    "stop": _stop,
    "logprobs": _of_type("logprobs", bool, "a boolean"),
    "top_logprobs": integer("top_logprobs", 0, 20),
    "logit_bias": _logit_bias,
    "seed": integer("seed", -(2**63), 2**63 - 1),
    "user": _of_type("user", str, "a string"),
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _of_type("parallel_tool_calls", bool, "a boolean"),
    "response_format": _response_format,
    "reasoning_effort": _reasoning_effort,
    "thinking": _thinking,
}


_check_n = integer("n", 1, MAX_N)
_MAX_TOKENS_CHECKS = [(name, integer(name, 1, MAX_TOKENS)) for name in ("max_completion_tokens", "max_tokens")]


def _refuse(message: str, param: str, *, unless: Callable[[Any], bool] = lambda _value: False) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not unless(value):
            raise _fail(message, param)

    return check


_LEGACY = "'functions' and 'function_call' are the legacy form of tools: send 'tools' and 'tool_choice'."
# what the upstream cannot do: refused with a 400, never dropped with the client none the wiser
_REFUSED: dict[str, Callable[[Any], None]] = {
    "functions": _refuse(_LEGACY, "functions"),
    "function_call": _refuse(_LEGACY, "function_call"),
    "modalities": _refuse(
        "This gateway's models answer in text: 'modalities' cannot include 'audio'.",
        "modalities",
        unless=lambda value: isinstance(value, list) and "audio" not in value,
    ),
    "audio": _refuse("Audio output is not available through this gateway.", "audio"),
    "web_search_options": _refuse("Web search is not available through this gateway.", "web_search_options"),
}


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _fail("'messages' must be a non-empty list.", "messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise _fail("Each message must be an object.", f"messages[{i}]")
        role = message.get("role")
        if type(role) is not str or role not in _ROLES:  # a list is no role (and no set member either)
            raise _fail(f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}.", f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _fail("Message content must be a string or a list of parts.", f"messages[{i}].content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise _fail("Each content part must be an object with a 'type'.", f"messages[{i}].content[{j}]")
        if content is None and role not in ("assistant", "function"):
            raise _fail(f"messages[{i}].content is required for role '{role}'.", f"messages[{i}].content")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise _fail("Tool messages need a 'tool_call_id' string.", f"messages[{i}].tool_call_id")
        if role == "developer":
            message = {**message, "role": "system"}
        out.append(message)
    return out


def model_of(body: Any) -> str:
    """The requested model name of a JSON body (OpenAI or Anthropic shape), or a 400."""
    if not isinstance(body, dict):
        raise _fail("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _fail("'model' is required and must be a non-empty string.", "model")
    return model


def parse_chat_request(
    body: Any, *, response_headers: dict[str, str] | None = None, context: Any = None
) -> ChatRequest:
    """Validate a Chat Completions body; a dialect's ``response_headers`` and ``context`` ride along."""
    model = model_of(body)
    forward: dict[str, Any] = {"messages": _messages(body.get("messages"))}
    for name, value in body.items():  # the body's few fields, not all of FIELDS
        check = FIELDS.get(name)
        if check is not None and value is not None:
            forward[name] = check(value)
        elif check is None and name in _REFUSED and value is not None:
            _REFUSED[name](value)
    choice = forward.get("tool_choice")
    if type(choice) is dict and choice.get("type") == "allowed_tools":
        _allowed_tools(forward, choice["allowed_tools"])
    if "top_logprobs" in forward and forward.get("logprobs") is not True:
        raise _fail("'top_logprobs' requires 'logprobs': true.", "top_logprobs")

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail("'stream' must be a boolean.", "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise _fail("'stream_options' is only allowed when 'stream' is true.", "stream_options")
        if not isinstance(options, dict):
            raise _fail("'stream_options' must be an object.", "stream_options")
        flag = options.get("include_usage", False)
        if not isinstance(flag, bool):
            raise _fail("'stream_options.include_usage' must be a boolean.", "stream_options.include_usage")
        include_usage = flag

    n = body.get("n")
    n = 1 if n is None else _check_n(n)
    limits = [check(body[name]) for name, check in _MAX_TOKENS_CHECKS if body.get(name) is not None]
    return ChatRequest(
        model=model,
        body=forward,
        stream=bool(stream),
        include_usage=include_usage,
        n=n,
        max_output_tokens=limits[0] if limits else None,  # max_completion_tokens wins (PROTOCOL 1.1)
        response_headers={} if response_headers is None else response_headers,
        context=context,
    )
