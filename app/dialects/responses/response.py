"""Writing Responses API objects as JSON bytes: the response, its output items, usage (pure, no I/O).

- Ids derive from the request id: ``resp_<hex>``, items ``rs_<hex>``, ``msg_<hex>``, ``fc_<hex>_<n>``.
- Output order: a ``reasoning`` item (when the upstream reasoned), a ``message`` item (when there is
  text, or nothing else), then one ``function_call`` item per tool call. The reasoning item's summary is
  the upstream's whole reasoning text (it has no summariser); ``encrypted_content`` (the same text,
  sealed) only when the request's ``include`` asked for ``reasoning.encrypted_content``.
- A flattened namespace tool's call goes back under its own name with ``namespace`` set. A tool call
  without a name is nothing a client could run: left out (a stream cannot take it back: it fails); one
  without an id gets ``call_<hex>_<n>``. The output is always valid input for the next turn.
- ``finish_reason`` ``length`` -> status ``incomplete`` (``max_output_tokens``), ``content_filter`` ->
  ``incomplete`` (``content_filter``), anything else -> ``completed``.
- Usage: ``prompt_tokens`` -> ``input_tokens``, ``completion_tokens`` -> ``output_tokens``, cached and
  reasoning details likewise; missing figures are 0.

Objects go straight to compact JSON bytes (fixed shapes filled in with ``%``; the variable parts --
texts, echoed request fields -- through orjson), never through an intermediate dict: the response is
written on every request, and the stored copy is the same bytes. Ids are ASCII built here, so they
need no escaping.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.dialects import runnable_function
from app.dialects.responses.seal import Sealer
from app.json import dumps_compact

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
ECHOED: tuple[str, ...] = ("instructions", "tool_choice", "parallel_tool_calls", "temperature", "top_p")
ECHOED += ("max_output_tokens", "previous_response_id", "reasoning", "text", "metadata", "user", "truncation", "tools")
DEFAULTS: dict[str, Any] = {"tool_choice": "auto", "parallel_tool_calls": True, "tools": [], "metadata": {}}
DEFAULTS |= {"text": {"format": {"type": "text"}}, "truncation": "disabled", "reasoning": {}}
_ECHO_INDEX = {key: i for i, key in enumerate(ECHOED)}
_ECHO_NAMES = [b'"%b":' % key.encode() for key in ECHOED]  # ECHOED's keys are ASCII
_ECHO_DEFAULT_MEMBERS = [orjson.dumps({key: DEFAULTS.get(key)})[1:-1] for key in ECHOED]
_DEFAULT_ECHO_JSON = b",".join(_ECHO_DEFAULT_MEMBERS)

_RESPONSE = (
    b'{"id":"resp_%b","object":"response","created_at":%d,"status":"%b","error":%b,"incomplete_details":%b,'
    b'"model":%b,"output":[%b],"usage":%b,"store":%b,%b}'
)
_USAGE = (
    b'{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d},"output_tokens":%d,'
    b'"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}'
)
_MESSAGE = b'{"type":"message","id":"%b","status":"%b","role":"assistant","content":[%b]}'
_OUTPUT_TEXT = b'{"type":"output_text","text":%b,"annotations":[],"logprobs":[]}'
EMPTY_OUTPUT_TEXT = _OUTPUT_TEXT % b'""'
# the usual answer -- one text, no reasoning, no tool call -- in one template: ``_RESPONSE`` with no error,
# one ``_MESSAGE`` item holding one ``_OUTPUT_TEXT``, and ``_USAGE`` in place (placeholders: the response's
# hex id, created_at, status, incomplete_details, model, the message's hex id, text, the five usage counts,
# store, the echoed members)
_TEXT_RESPONSE = (
    _RESPONSE.replace(b'"error":%b', b'"error":null', 1)
    .replace(b'"output":[%b]', b'"output":[' + _MESSAGE % (b"msg_%b", b"completed", _OUTPUT_TEXT) + b"]", 1)
    .replace(b'"usage":%b', b'"usage":' + _USAGE, 1)
)


@dataclass(slots=True)
class Context:
    """One request's Responses-only facts, kept from parse to render and to the store."""

    echo: bytes  # the echoed request fields as JSON object members: ``echo_members(body)``
    names: dict[str, tuple[str, str]]  # flattened tool name -> (namespace, name)
    encrypted: bool  # include: ["reasoning.encrypted_content"]
    store: bool
    input_items: list[Any]  # the whole conversation sent (previous response's included), for the store
    created_at: int = field(default_factory=lambda: int(time.time()))
    final: bytes | None = None  # the finished response's JSON, once rendered or streamed
    final_id: str = ""  # and its id


def echo_members(body: dict[str, Any]) -> bytes:
    """The request fields a response repeats (``ECHOED``, in that order) as JSON object members: the
    client's value where it set one (not null), else the default."""
    members = None
    for key, value in body.items():
        index = _ECHO_INDEX.get(key)
        if index is not None and value is not None:
            if members is None:
                members = _ECHO_DEFAULT_MEMBERS.copy()
            members[index] = _ECHO_NAMES[index] + dumps_compact(value)
    return _DEFAULT_ECHO_JSON if members is None else b",".join(members)


def item_id(prefix: str, request_id: str, n: int | None = None) -> str:
    base = f"{prefix}_{request_id.removeprefix('req_')}"
    return base if n is None else f"{base}_{n}"


def status_for(finish_reason: Any) -> tuple[str, str | None]:
    """The response's status and, when incomplete, the reason (an upstream's finish_reason of any other
    value or type: completed)."""
    reason = _INCOMPLETE.get(finish_reason) if type(finish_reason) is str else None
    return ("incomplete", reason) if reason else ("completed", None)


def usage_json(usage: Any) -> bytes:
    return _USAGE % usage_counts(usage)


def usage_counts(usage: Any) -> tuple[int, int, int, int, int]:
    """A chat ``usage``'s input, cached, output, reasoning and total tokens; a figure that is not a count
    (not an int, a bool or negative) is 0. Written out inline, no helper per figure: it runs on every request."""
    if type(usage) is not dict:
        usage = {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if type(prompt) is not int or prompt < 0:
        prompt = 0
    if type(completion) is not int or completion < 0:
        completion = 0
    cached: Any = 0
    reasoning: Any = 0
    details = usage.get("prompt_tokens_details")
    if type(details) is dict:
        cached = details.get("cached_tokens")
        if type(cached) is not int or cached < 0:
            cached = 0
    details = usage.get("completion_tokens_details")
    if type(details) is dict:
        reasoning = details.get("reasoning_tokens")
        if type(reasoning) is not int or reasoning < 0:
            reasoning = 0
    return prompt, cached, completion, reasoning, prompt + completion


def reasoning_json(rid: str, text: str, context: Context, sealer: Sealer) -> bytes:
    item: dict[str, Any] = {"type": "reasoning", "id": rid, "summary": [{"type": "summary_text", "text": text}]}
    if context.encrypted:
        item["encrypted_content"] = sealer.seal(text.encode("utf-8", "surrogatepass"))
    return dumps_compact(item)


def output_text_json(text_json: bytes) -> bytes:
    """An ``output_text`` content part around an already serialised text."""
    return _OUTPUT_TEXT % text_json


def message_json(mid: str, part: bytes, status: str = "completed") -> bytes:
    """A ``message`` item with one content part (``part``), or none (``b""``)."""
    return _MESSAGE % (mid.encode(), status.encode(), part)


def finished_arguments(arguments: str) -> str:
    """A finished call's arguments: ``{}`` added to none (or only blanks), as OpenAI writes a call without
    arguments (the openai SDK's ``parse`` helpers read them as JSON)."""
    return arguments if arguments.strip() else arguments + "{}"


def call_json(
    fid: str, call_id: str, name: str, arguments: str, context: Context, status: str = "completed"
) -> tuple[bytes, str]:
    """A ``function_call`` item, and the name it shows (a flattened namespace tool's own name)."""
    item: dict[str, Any] = {"type": "function_call", "id": fid, "call_id": call_id, "name": name}
    if name in context.names:
        item["namespace"], item["name"] = context.names[name]
    item["arguments"] = arguments
    item["status"] = status
    return dumps_compact(item), item["name"]


def response_template(context: Context, *, request_id: str, model: str) -> bytes:
    """``_RESPONSE`` with what stays the same while one response is written filled in (its id, created_at,
    model, store and the echoed fields); left to fill, in order: status, error, incomplete_details, the
    output items and usage. A stream writes its response twice (in progress, then finished) from one."""
    return _RESPONSE % (
        request_id.removeprefix("req_").encode(),
        context.created_at,
        b"%b",
        b"%b",
        b"%b",
        dumps_compact(model).replace(b"%", b"%%"),
        b"%b",
        b"%b",
        b"true" if context.store else b"false",
        context.echo.replace(b"%", b"%%"),
    )


def fill_response(
    template: bytes,
    status: str,
    output: Sequence[bytes] = (),
    usage: bytes = b"null",
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> bytes:
    """A response object from its ``response_template``."""
    return template % (
        status.encode(),
        b"null" if error is None else dumps_compact(error),
        b"null" if incomplete is None else b'{"reason":"%b"}' % incomplete.encode(),
        b",".join(output),
        usage,
    )


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def chat_to_response(answer: dict[str, Any], context: Context, sealer: Sealer, request_id: str, model: str) -> bytes:
    """A whole ``chat.completion`` -> a Response object's JSON (the first choice)."""
    choices = answer.get("choices")
    choice = choices[0] if type(choices) is list and choices and type(choices[0]) is dict else {}
    message = choice.get("message")
    if type(message) is not dict:
        message = {}
    reasoning = message.get("reasoning_content")
    text = message.get("content")
    if type(text) is not str:
        text = ""
    raw_calls = message.get("tool_calls")
    status, incomplete = status_for(choice.get("finish_reason"))
    if text and not reasoning and not raw_calls:
        hex_id = request_id.removeprefix("req_").encode()
        prompt, cached, completion, reasoning_tokens, total = usage_counts(answer.get("usage"))
        return _TEXT_RESPONSE % (
            hex_id,
            context.created_at,
            status.encode(),
            b"null" if incomplete is None else b'{"reason":"%b"}' % incomplete.encode(),
            dumps_compact(model),
            hex_id,
            dumps_compact(text),
            prompt,
            cached,
            completion,
            reasoning_tokens,
            total,
            b"true" if context.store else b"false",
            context.echo,
        )
    output: list[bytes] = []
    if type(reasoning) is str and reasoning:
        output.append(reasoning_json(item_id("rs", request_id), reasoning, context, sealer))
    calls = [call for call in raw_calls if runnable_function(call)] if type(raw_calls) is list else []
    if text or not calls:
        output.append(message_json(item_id("msg", request_id), _OUTPUT_TEXT % dumps_compact(text) if text else b""))
    for n, call in enumerate(calls):
        function = call["function"]
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = item_id("call", request_id, n)
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # non-standard upstreams send the object itself
            arguments = dumps_compact(arguments).decode()
        elif not isinstance(arguments, str):
            arguments = ""
        arguments = finished_arguments(arguments)
        output.append(call_json(item_id("fc", request_id, n), call_id, function["name"], arguments, context)[0])
    template = response_template(context, request_id=request_id, model=model)
    return fill_response(template, status, output, usage_json(answer.get("usage")), incomplete)
