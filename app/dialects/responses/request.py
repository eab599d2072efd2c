"""A Responses API body -> the ``ChatRequest`` for the upstream (pure; validation included).

Rules (docs/protocol.md 6.1, 6.4): ``instructions`` becomes the first ``system`` message, then the
``input`` items (``app.dialects.responses.items``); ``tools`` and ``tool_choice`` as in
``app.dialects.responses.tools``; ``reasoning.effort`` -> ``reasoning_effort`` (mapped as in
``app.chat_request``), ``max_output_tokens`` -> the request's output limit, ``text.format`` ->
``response_format``; ``temperature``, ``top_p``, ``parallel_tool_calls``, ``user`` pass under chat's own
rules (``app.chat_request.FIELDS``); ``metadata`` is only echoed; ``stream``, ``store`` and ``include``
are the request's own. A ``null`` field counts as absent, unknown fields are ignored; ``conversation``
and ``prompt`` (state kept at OpenAI, which an answer without it would silently differ from) are a 400.
Every failure is
an ``InvalidRequest`` whose ``param`` names the field; messages never repeat client content.

The body is checked in one walk over its fields (``_READERS``), not field by field: this runs on every
request, and the Responses endpoint should cost no more than chat's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app.chat_request import EFFORT, FIELDS, MAX_TOKENS, ChatRequest, integer, model_of
from app.dialects import DROPPED_TOOLS_HEADER
from app.dialects.responses.errors import invalid
from app.dialects.responses.items import input_messages
from app.dialects.responses.response import Context, echo_members
from app.dialects.responses.tools import Tools, allowed, convert_tools, tool_choice

ENCRYPTED_REASONING = "reasoning.encrypted_content"


def parse_responses(body: dict[str, Any], open_reasoning: Callable[[str], str | None]) -> ChatRequest:
    """Validate a Responses body (an object) and translate it: the ``ChatRequest`` for the upstream, its
    ``context`` the request's ``Context``, the dropped tools named in its ``response_headers``.

    One walk over the body's fields: each field's rule is its entry in ``_READERS``; a ``null`` field
    counts as absent. ``input`` is read last, after the walk, as it is required.
    """
    model = model_of(body)
    fields = _Fields()
    for key, value in body.items():  # the body's few fields, not all the readers
        read = _READERS.get(key)
        if read is not None and value is not None:
            read(fields, value)
    raw_input: Any = body.get("input")
    messages = input_messages(raw_input, open_reasoning)
    if fields.instructions:
        messages.insert(0, {"role": "system", "content": fields.instructions})
    if not messages:
        raise invalid("input", "must not be empty")
    forward = fields.forward
    forward["messages"] = messages
    tools = fields.tools
    if tools is not None and tools.chat:
        forward["tools"] = allowed(fields.tool_choice, tools.chat)
    if fields.tool_choice is not None:
        forward["tool_choice"] = tool_choice(fields.tool_choice)
    if fields.store:  # the conversation so far, for the store only
        input_items = (
            [{"type": "message", "role": "user", "content": raw_input}]
            if isinstance(raw_input, str)
            else list(raw_input)
        )
    else:
        input_items = []
    names = {} if tools is None else tools.names
    context = Context(echo_members(body), names, fields.encrypted, fields.store, input_items, int(time.time()))
    return ChatRequest(
        model=model,
        body=forward,
        stream=fields.stream,
        include_usage=False,
        n=1,
        max_output_tokens=fields.max_output_tokens,
        response_headers={DROPPED_TOOLS_HEADER: ",".join(tools.dropped)} if tools is not None and tools.dropped else {},
        context=context,
    )


class _Fields:
    """What the walk over a Responses body collected (see ``_READERS``)."""

    __slots__ = ("encrypted", "forward", "instructions", "max_output_tokens", "store", "stream", "tool_choice", "tools")

    def __init__(self) -> None:
        self.forward: dict[str, Any] = {}  # chat options to send upstream, validated
        self.instructions = ""
        self.tools: Tools | None = None
        self.tool_choice: Any = None
        self.stream = False
        self.max_output_tokens: int | None = None
        self.store = True  # OpenAI's default
        self.encrypted = False  # include: ["reasoning.encrypted_content"]


def _instructions(fields: _Fields, value: Any) -> None:
    if not isinstance(value, str):
        raise invalid("instructions", "must be a string")
    fields.instructions = value


def _tools(fields: _Fields, value: Any) -> None:
    fields.tools = convert_tools(value)


def _tool_choice(fields: _Fields, value: Any) -> None:
    fields.tool_choice = value  # checked after the walk, so that a problem with the tools is named first


def _passed(name: str) -> Callable[[_Fields, Any], None]:
    """A field chat has under the same name and rule (``app.chat_request.FIELDS``)."""
    check = FIELDS[name]

    def read(fields: _Fields, value: Any) -> None:
        fields.forward[name] = check(value)

    return read


def _stream(fields: _Fields, value: Any) -> None:
    if not isinstance(value, bool):
        raise invalid("stream", "must be a boolean")
    fields.stream = value


def _store(fields: _Fields, value: Any) -> None:
    if not isinstance(value, bool):
        raise invalid("store", "must be a boolean")
    fields.store = value


_check_max_output_tokens = integer("max_output_tokens", 1, MAX_TOKENS)


def _max_output_tokens(fields: _Fields, value: Any) -> None:
    fields.max_output_tokens = _check_max_output_tokens(value)


def _reasoning(fields: _Fields, value: Any) -> None:
    if not isinstance(value, dict):
        raise invalid("reasoning", "must be an object")
    effort = value.get("effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in EFFORT:
            raise invalid("reasoning.effort", f"must be one of {', '.join(EFFORT)}")
        fields.forward["reasoning_effort"] = EFFORT[effort]


def _text(fields: _Fields, value: Any) -> None:
    response_format = text_format(value)
    if response_format is not None:
        fields.forward["response_format"] = response_format


def _metadata(fields: _Fields, value: Any) -> None:
    if not isinstance(value, dict):
        raise invalid("metadata", "must be an object")  # only echoed


def _unsupported(name: str, instead: str) -> Callable[[_Fields, Any], None]:
    """A field whose state lives at OpenAI (a stored prompt, a conversation): refused, not ignored --
    answering without it would be a different answer."""

    def read(fields: _Fields, value: Any) -> None:
        raise invalid(name, f"is not supported by this gateway; {instead}")

    return read


def _include(fields: _Fields, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise invalid("include", "must be an array of strings")
    fields.encrypted = ENCRYPTED_REASONING in value


_READERS: dict[str, Callable[[_Fields, Any], None]] = {
    "instructions": _instructions,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "temperature": _passed("temperature"),
    "top_p": _passed("top_p"),
    "parallel_tool_calls": _passed("parallel_tool_calls"),
    "user": _passed("user"),
    "stream": _stream,
    "store": _store,
    "max_output_tokens": _max_output_tokens,
    "reasoning": _reasoning,
    "text": _text,
    "metadata": _metadata,
    "include": _include,
    "conversation": _unsupported("conversation", "chain turns with previous_response_id"),
    "prompt": _unsupported("prompt", "send the prompt's text as instructions and input"),
}


def text_format(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid("text", "must be an object")
    fmt = raw.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt, dict):
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name:
            raise invalid("text.format.name", "must be a non-empty string")
        if not isinstance(schema, dict):
            raise invalid("text.format.schema", "must be a JSON Schema object")
        json_schema: dict[str, Any] = {"name": name, "schema": schema}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                json_schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": json_schema}
    raise invalid("text.format.type", "must be text, json_object or json_schema")
