"""OpenAI Chat Completions result -> Anthropic ``Message`` (docs/protocol.md 3.3, 3.7).

Rules shared with the stream translator:

- Content block order: ``thinking`` (from ``reasoning_content``, signed by the gateway), ``text`` (only
  when non-empty), then one ``tool_use`` per tool call, ids kept.
- Tool arguments: empty -> ``{}``; a JSON object -> that object; anything else (broken JSON, an array, a
  string) -> ``{"_raw": "<arguments as received>"}``. The client's schema check then fails visibly and the
  model sees what it sent, instead of a silently empty call.
- ``finish_reason`` stop/length/tool_calls/function_call/content_filter -> end_turn/max_tokens/tool_use/
  tool_use/refusal; anything else -> end_turn. When tool calls are present but the upstream said ``stop``
  (or nothing), the stop reason is ``tool_use``: Claude clients only run tools after a tool_use stop.
- Usage: ``input_tokens = prompt_tokens - cached_tokens``, ``cache_read_input_tokens = cached_tokens``,
  ``cache_creation_input_tokens = 0``, ``output_tokens = completion_tokens`` (reasoning included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from app.dialects import runnable_function

_NO_NAMES: Mapping[str, str] = {}
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason_for(finish_reason: Any, *, has_tool_use: bool = False) -> str:
    """An upstream finish_reason of any other value or type (a list, an object): end_turn."""
    reason = _STOP_REASONS.get(finish_reason, "end_turn") if type(finish_reason) is str else "end_turn"
    if has_tool_use and reason == "end_turn":
        return "tool_use"
    return reason


def usage_to_anthropic(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = min(cached, prompt)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def tool_input(arguments: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def chat_to_message(
    chat: dict[str, Any],
    *,
    model: str,
    message_id: str,
    sign: Callable[[str], str],
    names: Mapping[str, str] = _NO_NAMES,
) -> dict[str, Any]:
    """The answer as an Anthropic message; ``names`` maps tool names sent upstream back to the client's."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": sign(reasoning)})
    text = _text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for position, call in enumerate(calls if isinstance(calls, list) else []):
        block = _tool_use(call, message_id, position, names)
        if block is not None:
            content.append(block)
    has_tool_use = any(block["type"] == "tool_use" for block in content)
    usage = chat.get("usage")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_for(choice.get("finish_reason"), has_tool_use=has_tool_use),
        "stop_sequence": None,
        "usage": usage_to_anthropic(usage if isinstance(usage, dict) else None),
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some upstreams answer with content parts
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _tool_use(call: Any, message_id: str, position: int, names: Mapping[str, str]) -> dict[str, Any] | None:
    function = runnable_function(call)
    if function is None:
        return None
    call_id = call.get("id")
    arguments = function.get("arguments")
    if isinstance(arguments, dict):  # non-standard upstreams send the object itself
        parsed = arguments
    else:
        parsed = tool_input(arguments if isinstance(arguments, str) else "")
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) and call_id else synthetic_tool_id(message_id, position),
        "name": names.get(function["name"], function["name"]),
        "input": parsed,
    }


def synthetic_tool_id(message_id: str, position: int) -> str:
    """A stable id for an upstream tool call that came without one."""
    return f"toolu_{message_id.removeprefix('msg_')}_{position}"
