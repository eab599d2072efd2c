"""How a relayed stream looks to an OpenAI client.

Chunks pass through byte for byte, except that the ``usage`` field and the final ``choices: []``
usage chunk are removed when the client did not ask for ``stream_options.include_usage`` (the
upstream is always asked for usage, so the gateway can bill). A mid-stream failure is the
``data: {"error": {...}}`` event that openai-python raises as ``APIError``; idle periods get
``: keepalive`` comments, which the SDKs ignore.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import GatewayError

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"


class OpenAIDialect:
    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: dict[str, Any], data: str) -> bytes:
        if not self.include_usage and "usage" in chunk:
            if not chunk.get("choices"):
                return b""
            del chunk["usage"]
            return b"data: " + orjson.dumps(chunk) + b"\n\n"
        return b"data: " + data.encode() + b"\n\n"

    def done(self) -> bytes:
        return DONE

    def error(self, error: GatewayError) -> bytes:
        return b"data: " + orjson.dumps(error.openai_body()) + b"\n\n"

    def heartbeat(self) -> bytes:
        return KEEPALIVE
