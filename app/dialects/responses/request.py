"""A Responses API body -> the ``ChatRequest`` for the upstream (pure; validation included).

Rules (docs/protocol.md 6.1, 6.4):

- ``instructions`` becomes the first ``system`` message; ``input`` is a string (one user message) or a
  list of items. Message items (``type`` ``message`` or absent) keep their role (``developer`` ->
  ``system``, as Ark may refuse it); ``input_text``/``output_text``/``text`` parts become text,
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
  Function tool names follow chat's rule (``^[a-zA-Z0-9_-]{1,64}$``), ``parameters`` is an object.
- ``reasoning.effort`` -> ``reasoning_effort`` (mapped as in ``app.chat_request``), ``max_output_tokens``
  -> the request's output limit, ``text.format`` -> ``response_format``; ``temperature``, ``top_p``,
  ``parallel_tool_calls``, ``user`` pass under chat's own rules (``app.chat_request.FIELDS``);
  ``metadata`` is only echoed; ``stream``, ``store`` and ``include`` are the request's own. A ``null``
  field counts as absent, unknown fields are ignored. Every failure is an ``InvalidRequest`` whose
  ``param`` names the field; messages never repeat client content.

The body is checked in one walk over its fields (``_READERS``), not field by field: this runs on every
request, and the Responses endpoint should cost no more than chat's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.chat_request import EFFORT, FIELDS, MAX_TOKENS, TOOL_NAME, ChatRequest, integer, model_of
from app.dialects import DROPPED_TOOLS_HEADER
from app.dialects.responses.response import Context, echo_members
from app.errors import InvalidRequest

_MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
_UNSAFE_NAME = re.compile(r"[^a-zA-Z0-9_-]")
ENCRYPTED_REASONING = "reasoning.encrypted_content"


def invalid(param: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {problem}", param=param)


@dataclass(slots=True)
class Tools:
    chat: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    dropped: list[str] = field(default_factory=list)  # types of tools the upstream cannot run


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
        forward["tools"] = tools.chat
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
}


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
    if namespace is None and not TOOL_NAME.match(name):
        raise invalid(f"{param}.name", "must match ^[a-zA-Z0-9_-]{1,64}$")
    function: dict[str, Any] = {"name": name}
    if namespace is not None:
        function["name"] = flat_name(namespace, name)
        tools.names[function["name"]] = (namespace, name)
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise invalid(f"{param}.parameters", "must be a JSON Schema object")
        function["parameters"] = parameters
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def tool_choice(raw: Any) -> Any:
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
