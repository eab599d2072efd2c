"""A Responses API body -> a Chat Completions body for the upstream (pure; validation included).

Rules (docs/protocol.md 6.1, 6.4):

- ``instructions`` becomes the first ``system`` message; ``input`` is a string (one user message) or a
  list of items. Message items (``type`` ``message`` or absent) keep their role (``developer`` ->
  ``system`` later, in ``app.chat_request``); ``input_text``/``output_text``/``text`` parts become text,
  ``input_image`` an ``image_url`` part; a lone text part becomes a plain string; assistant content is
  one string.
- ``function_call`` items join the assistant message just before them (a new one if the previous
  message is not the assistant's), ``id`` = ``call_id``; ``function_call_output`` -> a ``tool`` message.
- ``reasoning`` items become the ``reasoning_content`` of the next assistant message: the text sealed in
  ``encrypted_content`` when this gateway sealed it (``open_reasoning``), else the summary texts; a
  reasoning item with no assistant turn after it is dropped.
- Other item types (``web_search_call``, ...) are outputs of tools the upstream never ran: dropped.
  ``item_reference`` and ``input_file`` cannot be served: 400.
- Tools: ``function`` tools are nested as chat wants; ``namespace`` tools are flattened to
  ``<namespace>__<name>`` (``Tools.names`` maps them back); every other type (``web_search``...) runs
  on OpenAI's side only and is dropped, named in ``Tools.dropped``. A request whose only tools are
  such, or whose ``tool_choice`` forces one, is a 400 naming it.
- ``reasoning.effort`` -> ``reasoning_effort``, ``max_output_tokens`` -> ``max_completion_tokens``,
  ``text.format`` -> ``response_format``; ``temperature``, ``top_p``, ``parallel_tool_calls``, ``user``
  pass; ``metadata`` is only echoed. Unknown fields are ignored. Every failure is an ``InvalidRequest``
  whose ``param`` names the field; messages never repeat client content.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidRequest

_MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
_UNSAFE_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def invalid(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {problem}", param=param)


@dataclass(slots=True)
class Tools:
    chat: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    dropped: list[str] = field(default_factory=list)  # types of tools the upstream cannot run


def responses_to_chat(
    body: dict[str, Any], open_reasoning: Callable[[str], str | None]
) -> tuple[dict[str, Any], Tools]:
    """Return the chat body (``model``, ``messages``, options) and what became of the tools."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("instructions", "must be a string")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages.extend(input_messages(body.get("input"), open_reasoning))
    if not messages:
        raise invalid("input", "must not be empty")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    tools = convert_tools(body.get("tools"))
    if tools.chat:
        chat["tools"] = tools.chat
    choice = tool_choice(body.get("tool_choice"), tools)
    if choice is not None:
        chat["tool_choice"] = choice
    for name in ("temperature", "top_p", "parallel_tool_calls", "user", "stream"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise invalid("reasoning", "must be an object")
        if reasoning.get("effort") is not None:
            chat["reasoning_effort"] = reasoning["effort"]
    response_format = text_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("metadata", "must be an object")
    return chat, tools


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
    if role not in _MESSAGE_ROLES:
        raise invalid(f"{param}.role", "must be one of 'user', 'assistant', 'system', 'developer'")
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


def flat_name(namespace: str, name: str) -> str:
    return _UNSAFE_NAME.sub("_", f"{namespace}__{name}")[:64]


def convert_tools(raw: Any) -> Tools:
    tools = Tools()
    if raw is None:
        return tools
    if not isinstance(raw, list):
        raise invalid("tools", "must be an array")
    for i, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            raise invalid(f"tools.{i}", "must be a tool object with a string `type`")
        if kind == "function":
            tools.chat.append(_function_tool(tool, f"tools.{i}", None, tools))
        elif kind == "namespace":
            inner = tool.get("tools")
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace or not isinstance(inner, list):
                raise invalid(f"tools.{i}", "a namespace tool needs a `name` and a `tools` array")
            for j, member in enumerate(inner):
                if isinstance(member, dict) and member.get("type", "function") == "function":
                    tools.chat.append(_function_tool(member, f"tools.{i}.tools.{j}", namespace, tools))
                elif isinstance(member, dict) and isinstance(member.get("type"), str):
                    tools.dropped.append(member["type"])
        elif kind not in tools.dropped:
            tools.dropped.append(kind)
    if tools.dropped and not tools.chat:
        raise invalid("tools", f"the upstream cannot run {', '.join(tools.dropped)} tools and no function tool is left")
    return tools


def _function_tool(tool: dict[str, Any], param: str, namespace: str | None, tools: Tools) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"{param}.name", "must be a non-empty string")
    function: dict[str, Any] = {"name": name}
    if namespace is not None:
        function["name"] = flat_name(namespace, name)
        tools.names[function["name"]] = (namespace, name)
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    if tool.get("parameters") is not None:
        function["parameters"] = tool["parameters"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def tool_choice(raw: Any, tools: Tools) -> Any:
    if raw is None or raw in ("auto", "none", "required"):
        return raw
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise invalid("tool_choice", "must be 'auto', 'none', 'required' or a tool choice object")
    kind = raw["type"]
    if kind == "function":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.name", "must be a non-empty string")
        if isinstance(raw.get("namespace"), str):
            name = flat_name(raw["namespace"], name)
        return {"type": "function", "function": {"name": name}}
    if kind in ("allowed_tools", "auto"):
        return "auto"
    raise invalid("tool_choice", f"forces a {kind} tool, which the upstream cannot run")


def text_format(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    fmt = raw.get("format") if isinstance(raw, dict) else None
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
