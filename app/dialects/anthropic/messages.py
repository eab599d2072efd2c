"""The Anthropic ``messages`` array -> OpenAI chat messages (validation included).

Rules (docs/protocol.md 3.7):

- ``role: "system"`` messages are hoisted: their text is returned separately, the caller prepends it to
  the one leading system message.
- Consecutive messages of one role are one turn, as Anthropic combines them (two assistant messages
  with one tool call each are one assistant message with both, followed by their tool messages).
- A user turn becomes, in order: one ``{"role": "tool"}`` message per ``tool_result`` block (in block
  order), then one user message with the images of those tool results and the remaining text/image
  parts, only if there are any. Content that was a plain string stays a string, and a lone text block
  becomes a plain string too.
- ``tool_result`` content (string or text/image blocks) becomes one string: text blocks joined with
  ``\\n``; each image is named there (``[image 1: attached to the next user message]``) and sent in
  that user message, as a tool message carries only text (Claude Code's screenshots reach the model);
  ``is_error: true`` prefixes ``Error: ``.
- ``document`` blocks: a text source (``source.type`` ``text``, or ``content`` with text blocks) becomes a
  text part, prefixed by its title; a PDF/base64/url/file document, which the upstream cannot read, is
  replaced by ``OMITTED_DOCUMENT``, so the model says it cannot see it instead of inventing it.
- An assistant message becomes ONE assistant message: text blocks concatenated as ``content`` (``null``
  when there are tool calls and no text), ``tool_use`` -> ``tool_calls`` (arguments = compact JSON of
  ``input``), thinking text concatenated as ``reasoning_content`` (Seed models need it back in tool
  loops). Concatenation uses no separator, so the gateway's own streamed blocks rebuild the upstream text
  exactly. ``redacted_thinking`` is dropped.
- ``cache_control`` and every other Anthropic-only key vanish because output dicts are built fresh.
- Block types this gateway does not know are dropped (forward compatibility); a known block type in the
  wrong role (``tool_use`` from the user, ``tool_result`` from the assistant) is a 400.

Error messages name the field (``messages.2.content.0.text``) and never repeat client content.
"""

from __future__ import annotations

from typing import Any

from app.dialects import upstream_tool_name
from app.dialects.anthropic.errors import AnthropicRequestError
from app.json import dumps_compact

_USER_ONLY = frozenset({"image", "document", "tool_result"})
_Block = tuple[dict[str, Any], str]  # a content block and the param naming it (``messages.2.content.0``)
OMITTED_DOCUMENT = "[A document was attached here that this model cannot read (a PDF or a file); it was left out.]"
_ASSISTANT_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking"})


def invalid(param: str, problem: str) -> AnthropicRequestError:
    return AnthropicRequestError(f"{param}: {problem}", param)


def convert_messages(raw: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Return (hoisted system texts, chat messages) for the ``messages`` field."""
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "must be a non-empty array of message objects")
    system: list[str] = []
    turns: list[tuple[str, list[_Block]]] = []  # consecutive messages of one role, as one turn
    for i, message in enumerate(raw):
        param = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(param, "must be an object with `role` and `content`")
        role = message.get("role")
        content = _content(message.get("content"), f"{param}.content")
        if role == "system":
            system.extend(_system_message(content, param))
            continue
        if role not in ("user", "assistant"):
            raise invalid(f"{param}.role", "must be one of 'user', 'assistant', 'system'")
        if isinstance(content, str):
            blocks = [({"type": "text", "text": content}, f"{param}.content")]
        else:
            blocks = [(block, f"{param}.content.{j}") for j, block in enumerate(content)]
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    out: list[dict[str, Any]] = []
    for role, blocks in turns:
        if role == "user":
            out.extend(_user(blocks))
        else:
            out.append(_assistant(blocks))
    return system, out


def text_block(block: dict[str, Any], param: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise invalid(f"{param}.text", "must be a string")
    return text


def _content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(param, "must be a string or an array of content blocks")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise invalid(f"{param}.{j}", "must be a content block object with a string `type`")
    return content


def _user(blocks: list[_Block]) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    shown: list[dict[str, Any]] = []  # images of tool results: a tool message carries only text
    parts: list[dict[str, Any]] = []
    for block, where in blocks:
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": text_block(block, where)})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "document":
            text = _document_text(block, where)
            parts.append({"type": "text", "text": OMITTED_DOCUMENT if text is None else text})
        elif kind == "tool_result":
            tool_messages.append(_tool_message(block, where, shown))
        elif kind in _ASSISTANT_ONLY:
            raise invalid(f"{where}.type", f"'{kind}' blocks are only allowed in assistant messages")
    parts = shown + parts
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tool_messages, {"role": "user", "content": parts[0]["text"]}]
    if parts:
        return [*tool_messages, {"role": "user", "content": parts}]
    if tool_messages:
        return tool_messages
    # Every block was dropped: keep the turn so user/assistant alternation survives.
    return [{"role": "user", "content": ""}]


def _assistant(blocks: list[_Block]) -> dict[str, Any]:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block, where in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(text_block(block, where))
        elif kind == "thinking":
            thinking = block.get("thinking")
            if not isinstance(thinking, str):
                raise invalid(f"{where}.thinking", "must be a string")
            thoughts.append(thinking)
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind in _USER_ONLY:
            raise invalid(f"{where}.type", f"'{kind}' blocks are only allowed in user messages")
        # redacted_thinking is opaque to the upstream: dropped.
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return message


def _system_message(content: str | list[dict[str, Any]], param: str) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    texts: list[str] = []
    for j, block in enumerate(content):
        where = f"{param}.content.{j}"
        if block["type"] != "text":
            raise invalid(f"{where}.type", "system messages may only contain text blocks")
        text = text_block(block, where)
        if text:
            texts.append(text)
    return texts


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{param}.source", "must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        data = source.get("data")
        if not isinstance(media_type, str) or not media_type:
            raise invalid(f"{param}.source.media_type", "must be a non-empty string")
        if not isinstance(data, str) or not data:
            raise invalid(f"{param}.source.data", "must be a non-empty base64 string")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        given = source.get("url")
        if not isinstance(given, str) or not given:
            raise invalid(f"{param}.source.url", "must be a non-empty string")
        url = given
    else:
        raise invalid(f"{param}.source.type", "must be 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_text(block: dict[str, Any], param: str) -> str | None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{param}.source", "must be an object")
    kind = source.get("type")
    text: str | None = None
    if kind == "text" and isinstance(source.get("data"), str):
        text = source["data"]
    elif kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            text = inner
        elif isinstance(inner, list):
            text = "\n".join(b["text"] for b in inner if isinstance(b, dict) and isinstance(b.get("text"), str))
    if text is None:
        return None
    title = block.get("title")
    return f"{title}\n\n{text}" if isinstance(title, str) and title else text


def _tool_message(block: dict[str, Any], param: str, shown: list[dict[str, Any]]) -> dict[str, Any]:
    """The tool message of a ``tool_result``; its images go to ``shown`` (the user message after it)."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise invalid(f"{param}.tool_use_id", "must be a non-empty string")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        pieces: list[str] = []
        for k, inner in enumerate(content):
            where = f"{param}.content.{k}"
            if not isinstance(inner, dict):
                raise invalid(where, "must be a content block object")
            kind = inner.get("type")
            if kind == "text":
                pieces.append(text_block(inner, where))
            elif kind == "image":
                shown.append(_image_part(inner, where))
                pieces.append(f"[image {len(shown)}: attached to the next user message]")
            elif kind == "document":
                doc = _document_text(inner, where)
                pieces.append(OMITTED_DOCUMENT if doc is None else doc)
        text = "\n".join(pieces)
    else:
        raise invalid(f"{param}.content", "must be a string or an array of content blocks")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise invalid(f"{param}.is_error", "must be a boolean")
    if is_error:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


def _tool_call(block: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = block.get("id")
    name = block.get("name")
    arguments = block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise invalid(f"{param}.id", "must be a non-empty string")
    if not isinstance(name, str) or not name:
        raise invalid(f"{param}.name", "must be a non-empty string")
    if not isinstance(arguments, dict):
        raise invalid(f"{param}.input", "must be an object")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": upstream_tool_name(name), "arguments": compact_json(arguments)},
    }


def compact_json(value: Any) -> str:
    return dumps_compact(value).decode()  # orjson's refusals (big integers, lone surrogates) via the stdlib
