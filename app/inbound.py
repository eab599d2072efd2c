"""The inbound request, as every route sees it: id, client address, API key, body, access record.

The raw billed endpoints (``app.asgi``) and the FastAPI routes (``app.routes.deps``) build it the same
way, from the ASGI scope. The body is read only when a step asks for it -- after the per-IP limit and
authentication -- with its size and read deadline enforced by ``app.asgi.RequestContext``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import Receive, Scope

from app.clientip import TrustedProxies, client_ip
from app.errors import PayloadTooLarge


@dataclass(slots=True)
class AccessRecord:
    """What the access log line (and the metrics) say about one request, filled in as it runs."""

    endpoint: str
    key_id: str | None = None
    model: str | None = None
    error_code: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: int = 0
    first_token_at: float | None = None


def api_key_of(headers: Headers) -> str | None:
    """``Authorization: Bearer`` (OpenAI, ANTHROPIC_AUTH_TOKEN) or ``x-api-key`` (ANTHROPIC_API_KEY)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


@dataclass(slots=True)
class Inbound:
    request_id: str
    client_ip: str
    api_key: str | None
    headers: Headers
    record: AccessRecord
    max_body_bytes: int
    started: float = field(default_factory=time.perf_counter)
    _receive: Receive | None = None

    @classmethod
    def of(cls, scope: Scope, receive: Receive, *, trusted: TrustedProxies, max_body_bytes: int) -> Inbound:
        headers = Headers(scope=scope)
        peer = scope.get("client")
        state = scope["state"]
        return cls(
            request_id=state["request_id"],
            client_ip=client_ip(peer[0] if peer else None, headers.getlist("x-forwarded-for"), trusted),
            api_key=api_key_of(headers),
            headers=headers,
            record=state["access"],
            max_body_bytes=max_body_bytes,
            _receive=receive,
        )

    async def body(self) -> bytes:
        """The whole body: 413 when it is (or announces to be) larger than ``server.max_body_bytes``."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes.")
        receive = self._receive
        if receive is None:
            return b""
        self._receive = None
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)
