"""Responses ``input`` items -> Chat Completions messages (pure; validation included).

- ``input`` is a string (one user message) or a list of items. Message items (``type`` ``message`` or
  absent) keep their role (``developer`` -> ``system``, as Ark may refuse it); ``input_text`` /
  ``output_text`` / ``text`` parts become text, ``input_image`` an ``image_url`` part; a lone text part
  becomes a plain string; assistant content is one string.
- ``function_call`` items join the assistant message just before them (a new one if the previous
  message is not the assistant's), ``id`` = ``call_id``; ``function_call_output`` -> a ``tool`` message.
- ``reasoning`` items become the ``reasoning_content`` of the next assistant message: the text sealed in
  ``encrypted_content`` when this gateway sealed it (``open_reasoning``), else the summary texts; a
  reasoning item with no assistant turn after it is dropped.
- Other item types (``web_search_call``, ...) are outputs of tools the upstream never ran: dropped.
  ``item_reference`` and ``input_file`` cannot be served: 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.dialects.responses.errors import invalid
from app.dialects.responses.tools import flat_name

_MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})


def input_messages(raw: Any, open_reasoning: Callable[[str], str | None]) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise invalid("input", "must be a string or an array of input items")
    out: list[dict[str, Any]] = []
    thoughts: list[str] = []  # reasoning waiting for the assistant turn it belongs to
    for i, item in enumerate(raw):
        param = f"input.{i}"
        if not isinstance(item, dict):
            raise invalid(param, "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(item, param)
            if message["role"] == "assistant":
                _attach(message, thoughts)
            out.append(message)
        elif kind == "function_call":
            call = _function_call(item, param)
            if out and out[-1]["role"] == "assistant" and not thoughts:
                out[-1].setdefault("tool_calls", []).append(call)
                if out[-1].get("content") == "":
                    out[-1]["content"] = None
            else:
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
                _attach(message, thoughts)
                out.append(message)
        elif kind == "function_call_output":
            out.append(_tool_output(item, param))
        elif kind == "reasoning":
            text = _reasoning_text(item, param, open_reasoning)
            if text:
                thoughts.append(text)
        elif kind == "item_reference":
            raise invalid(f"{param}.type", "item_reference is not supported; send the items themselves")
        # any other item is the record of a tool the upstream cannot run: dropped
    return out


def _attach(message: dict[str, Any], thoughts: list[str]) -> None:
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
        thoughts.clear()


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = item.get("role")
    if type(role) is not str or role not in _MESSAGE_ROLES:
        raise invalid(f"{param}.role", "must be one of 'user', 'assistant', 'system', 'developer'")
    if role == "developer":
        role = "system"  # Ark may refuse developer
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid(f"{param}.content", "must be a string or an array of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{param}.content.{j}"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise invalid(where, "must be a content part object with a string `type`")
        if kind in _TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(f"{where}.text", "must be a string")
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            parts.append(_image(part, where))
        elif kind == "input_file":
            raise invalid(f"{where}.type", "input_file parts are not supported by this gateway")
        # refusal and unknown parts: dropped
    if role != "user":
        return {"role": role, "content": "".join(p["text"] for p in parts if p["type"] == "text")}
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}
    return {"role": role, "content": parts}


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise invalid(f"{where}.image_url", "must be a URL or data URL (file_id is not supported)")
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high", "auto"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{param}.call_id", "must be a non-empty string")
    if not isinstance(name, str) or not name:
        raise invalid(f"{param}.name", "must be a non-empty string")
    if not isinstance(arguments, str):
        raise invalid(f"{param}.arguments", "must be a string of JSON")
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace:
        name = flat_name(namespace, name)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{param}.call_id", "must be a non-empty string")
    if isinstance(output, list):
        texts = []
        for part in output:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") == "input_image":
                texts.append("[image omitted]")
        output = "\n".join(texts)
    if not isinstance(output, str):
        raise invalid(f"{param}.output", "must be a string or an array of content parts")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _reasoning_text(item: dict[str, Any], param: str, open_reasoning: Callable[[str], str | None]) -> str:
    sealed = item.get("encrypted_content")
    if isinstance(sealed, str) and sealed:
        text = open_reasoning(sealed)
        if text is not None:
            return text
    texts: list[str] = []
    for key in ("summary", "content"):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list):
            raise invalid(f"{param}.{key}", "must be an array")
        texts.extend(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n\n".join(texts)
