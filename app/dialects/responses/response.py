"""Building Responses API objects: the response, its output items, usage (pure functions, no I/O).

- Ids derive from the request id: ``resp_<hex>``, items ``rs_<hex>``, ``msg_<hex>``, ``fc_<hex>_<n>``.
- Output order: a ``reasoning`` item (when the upstream reasoned), a ``message`` item (when there is
  text, or nothing else), then one ``function_call`` item per tool call. The reasoning item's summary is
  the upstream's whole reasoning text (it has no summariser); ``encrypted_content`` (the same text,
  sealed) only when the request's ``include`` asked for ``reasoning.encrypted_content``.
- A flattened namespace tool's call goes back under its own name with ``namespace`` set.
- ``finish_reason`` ``length`` -> status ``incomplete`` (``max_output_tokens``), ``content_filter`` ->
  ``incomplete`` (``content_filter``), anything else -> ``completed``.
- Usage: ``prompt_tokens`` -> ``input_tokens``, ``completion_tokens`` -> ``output_tokens``, cached and
  reasoning details likewise; missing figures are 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from app.dialects.responses.seal import Sealer

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
ECHOED: tuple[str, ...] = ("instructions", "tool_choice", "parallel_tool_calls", "temperature", "top_p")
ECHOED += ("max_output_tokens", "previous_response_id", "reasoning", "text", "metadata", "user", "truncation", "tools")
DEFAULTS: dict[str, Any] = {"tool_choice": "auto", "parallel_tool_calls": True, "tools": [], "metadata": {}}
DEFAULTS |= {"text": {"format": {"type": "text"}}, "truncation": "disabled", "reasoning": {}}
_ECHO_DEFAULTS: dict[str, Any] = {key: DEFAULTS.get(key) for key in ECHOED}  # in ECHOED's order
_ECHOED = frozenset(ECHOED)


@dataclass(slots=True)
class Context:
    """One request's Responses-only facts, kept from parse to render and to the store."""

    echo: dict[str, Any]  # the echoed fields the client set (not null); ``echoed(body)``
    names: dict[str, tuple[str, str]]  # flattened tool name -> (namespace, name)
    encrypted: bool  # include: ["reasoning.encrypted_content"]
    store: bool
    input_items: list[Any]  # the whole conversation sent (previous response's included), for the store
    created_at: int = field(default_factory=lambda: int(time.time()))
    final: dict[str, Any] | None = None  # the finished response, once rendered or streamed


def echoed(body: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``ECHOED`` the request set to something other than null."""
    return {key: value for key, value in body.items() if key in _ECHOED and value is not None}


def response_id(request_id: str) -> str:
    return "resp_" + request_id.removeprefix("req_")


def item_id(prefix: str, request_id: str, n: int | None = None) -> str:
    base = f"{prefix}_{request_id.removeprefix('req_')}"
    return base if n is None else f"{base}_{n}"


def status_for(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    reason = _INCOMPLETE.get(finish_reason or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def usage_to_responses(usage: Any) -> dict[str, Any]:
    usage = usage if isinstance(usage, dict) else {}
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def reasoning_item(rid: str, text: str, context: Context, sealer: Sealer) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "id": rid, "summary": [{"type": "summary_text", "text": text}]}
    if context.encrypted:
        item["encrypted_content"] = sealer.seal(text.encode("utf-8", "surrogatepass"))
    return item


def message_item(mid: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": mid, "status": status, "role": "assistant", "content": [part] if text else []}


def call_item(
    fid: str, call_id: str, name: str, arguments: str, context: Context, status: str = "completed"
) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "function_call", "id": fid, "call_id": call_id, "name": name}
    if name in context.names:
        item["namespace"], item["name"] = context.names[name]
    item["arguments"] = arguments
    item["status"] = status
    return item


def response_object(
    context: Context,
    *,
    request_id: str,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "id": response_id(request_id),
        "object": "response",
        "created_at": context.created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "usage": usage,
        "store": context.store,
        **_ECHO_DEFAULTS,
    }
    if context.echo:
        response.update(context.echo)  # keys keep ECHOED's order
    return response


def chat_to_response(
    answer: dict[str, Any], context: Context, sealer: Sealer, request_id: str, model: str
) -> dict[str, Any]:
    """A whole ``chat.completion`` -> a Response object (the first choice)."""
    choices = answer.get("choices") or [{}]
    choice: dict[str, Any] = choices[0] if isinstance(choices[0], dict) else {}
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(item_id("rs", request_id), reasoning, context, sealer))
    text: str = message["content"] if isinstance(message.get("content"), str) else ""
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    if text or not calls:
        output.append(message_item(item_id("msg", request_id), text))
    for n, call in enumerate(calls):
        function = call["function"]
        call_id: str = call["id"] if isinstance(call.get("id"), str) else item_id("call", request_id, n)
        name = function.get("name") if isinstance(function.get("name"), str) else ""
        arguments = function.get("arguments") if isinstance(function.get("arguments"), str) else ""
        output.append(call_item(item_id("fc", request_id, n), call_id, name, arguments, context))
    status, incomplete = status_for(choice.get("finish_reason"))
    return response_object(
        context,
        request_id=request_id,
        model=model,
        status=status,
        output=output,
        usage=usage_to_responses(answer.get("usage")),
        incomplete=incomplete,
    )
