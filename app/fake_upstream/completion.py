"""Chat completions: what the fake upstream reads from a request and the bodies it answers with.

Rules this module owns:

- The script marker is `#script:NAME` anywhere in a message text; the LAST marker in message order wins,
  so a multi-turn test can switch scripts by adding a new user message.
- Echo mode answers `"Seedgate demo: you said: <last user text, first 200 characters>"`.
- Non-stream bodies follow the OpenAI/Ark `chat.completion` shape; `reasoning_content` and `tool_calls`
  appear only when the script has them. `body_padding_bytes` grows the content with `.` until the
  encoded body is at least that large (usage is computed from the padded content).
- Stream payloads follow docs/protocol.md 1.3: role chunk, reasoning deltas, content deltas, tool-call
  fragments, the `delta: {}` chunk with `finish_reason`, then (with `include_usage`) one
  `choices: []` usage chunk, then `[DONE]`. `stream_error` replaces everything after the tool-call
  fragments with one `{"error": ...}` payload; `no_done` drops `[DONE]`.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from app.fake_upstream.script import DEFAULT_CONTENT, Script
from app.json import dumps_compact

_MARKER = re.compile(r"#script:([A-Za-z0-9_.\-]+)")
_ECHO_PREFIX = "Seedgate demo: you said: "
_ECHO_LIMIT = 200
_DEFAULT_MODEL = "fake-model"
DONE = b"[DONE]"
_ids = itertools.count(1)


def _texts(message: Any) -> list[str]:
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        ]
    return []


@dataclass(slots=True)
class ChatRequest:
    """The few facts of a chat request the fake upstream acts on."""

    model: str
    stream: bool
    include_usage: bool
    prompt_chars: int
    marker: str | None
    last_user_text: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ChatRequest:
        messages = body.get("messages")
        prompt_chars = 0
        marker: str | None = None
        last_user_text = ""
        for message in messages if isinstance(messages, list) else ():
            texts = _texts(message)
            for text in texts:
                prompt_chars += len(text)
                found = _MARKER.findall(text) if "#script:" in text else None
                if found:
                    marker = found[-1]
            if isinstance(message, dict) and message.get("role") == "user":
                last_user_text = " ".join(texts)
        options = body.get("stream_options")
        model = body.get("model")
        return cls(
            model=model if isinstance(model, str) else _DEFAULT_MODEL,
            stream=body.get("stream") is True,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            prompt_chars=prompt_chars,
            marker=marker,
            last_user_text=last_user_text,
        )

    def default_content(self, *, echo: bool) -> str:
        return _ECHO_PREFIX + self.last_user_text[:_ECHO_LIMIT] if echo else DEFAULT_CONTENT


def completion_body(script: Script, request: ChatRequest, content: str) -> bytes:
    """The encoded non-stream `chat.completion` body."""
    body = _completion_body(script, request, content)
    deficit = script.body_padding_bytes - len(body)
    if deficit > 0:
        # Usage figures only grow with the content, so the padded body cannot shrink below the target.
        body = _completion_body(script, request, content + "." * deficit)
    return body


def _completion_body(script: Script, request: ChatRequest, content: str) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if script.reasoning:
        message["reasoning_content"] = script.reasoning
    if script.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in script.tool_calls
        ]
    body: dict[str, Any] = {
        "id": f"chatcmpl-fake-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": script.model or request.model,
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "finish_reason": script.resolved_finish_reason(),
                "logprobs": None,
                "message": message,
                "moderation_hit_type": None,
            }
        ],
    }
    usage = script.usage_for(request.prompt_chars, content)
    if usage is not None:
        body["usage"] = usage
    return dumps_compact(body)  # a lone surrogate in a scripted text is written escaped, as a Python upstream would


def stream_payloads(script: Script, request: ChatRequest, content: str) -> list[bytes]:
    """The JSON payload of every `data:` event of the stream, in order, `[DONE]` included."""
    head: dict[str, Any] = {
        "id": f"chatcmpl-fake-{next(_ids)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": script.model or request.model,
    }
    tail: dict[str, Any] = {"usage": None} if request.include_usage else {}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return dumps_compact({**head, "choices": [choice], **tail})  # lone surrogates escaped, see above

    payloads = [chunk({"role": "assistant", "content": ""})]
    payloads += [chunk({"reasoning_content": piece}) for piece in script.reasoning_pieces()]
    payloads += [chunk({"content": piece}) for piece in script.content_pieces(content)]
    for index, call in enumerate(script.tool_calls):
        opening = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        payloads.append(chunk({"tool_calls": [opening]}))
        payloads += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}) for piece in call.fragments()
        ]
    if script.stream_error is not None:
        payloads.append(orjson.dumps({"error": script.stream_error}))
        return payloads
    payloads.append(chunk({}, script.resolved_finish_reason()))
    usage = script.usage_for(request.prompt_chars, content)
    if request.include_usage and usage is not None:
        payloads.append(orjson.dumps({**head, "choices": [], "usage": usage}))
    if not script.no_done:
        payloads.append(DONE)
    return payloads
