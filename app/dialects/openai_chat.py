"""``POST /v1/chat/completions``: the upstream already speaks it, so answers pass through.

Stream chunks pass through byte for byte, except that the ``usage`` field and the final
``choices: []`` usage chunk are removed when the client did not ask for
``stream_options.include_usage`` (the upstream is always asked for usage, so the gateway can bill).
An upstream event whose data spans several ``data:`` lines (legal SSE) is re-emitted as one
``data:`` line per line, never as text with raw newlines that would break the client's framing.
A mid-stream failure is the ``data: {"error": {...}}`` event that openai-python raises as
``APIError``; idle periods get ``: keepalive`` comments, which the SDKs ignore.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.chat_request import ChatRequest, model_of, parse_chat_request
from app.dialects import Reply
from app.errors import Envelope, GatewayError

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"


class ChatStream:
    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: dict[str, Any], data: str) -> bytes:
        if not self.include_usage and "usage" in chunk:
            if not chunk.get("choices"):
                return b""
            del chunk["usage"]
            try:
                return b"data: " + orjson.dumps(chunk) + b"\n\n"
            except orjson.JSONEncodeError:
                pass  # a hostile upstream's chunk nested deeper than orjson writes: relayed as it came
        if "\n" in data:
            return b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n"
        return b"data: " + data.encode() + b"\n\n"

    def done(self) -> bytes:
        return DONE

    def error(self, error: GatewayError) -> bytes:
        return b"data: " + orjson.dumps(error.openai_body()) + b"\n\n"

    def heartbeat(self) -> bytes:
        return KEEPALIVE


class OpenAIChat:
    endpoint = "chat.completions"
    envelope: Envelope = "openai"

    def model_name(self, body: Any) -> str:
        return model_of(body)

    def parse(self, body: Any) -> ChatRequest:
        return parse_chat_request(body)

    def render(self, answer: dict[str, Any], raw: bytes, reply: Reply) -> bytes:
        return raw  # the upstream's answer goes out as it came, model id included

    def stream(self, request: ChatRequest, reply: Reply) -> ChatStream:
        return ChatStream(include_usage=request.include_usage)
