"""The two hot endpoints, served straight from ASGI; everything else goes to FastAPI.

``POST /v1/chat/completions`` and ``POST /v1/messages`` are every billed request. Under FastAPI
they paid ~0.25 ms of CPU each for routing, dependency solving and five middleware layers (measured
with py-spy: a quarter of the gateway's time). Here the route does what a thin FastAPI route did --
read the request, call ``pipeline.handle_chat`` once, render its answer or its ``GatewayError`` -- and
nothing else. The request flow itself is unchanged and lives in ``app.pipeline``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.dialects.anthropic.dialect import AnthropicMessages, Signer
from app.error_response import error_response
from app.errors import GatewayError, InternalError
from app.inbound import api_key_of, peer_ip
from app.pipeline import Call, Frontend, handle_chat
from app.routes.models import OPENAI_CHAT

if TYPE_CHECKING:
    from app.services import Gateway

log = logging.getLogger("seedgate")


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class HotPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app  # FastAPI: every other route, the lifespan, the docs
        self._anthropic: AnthropicMessages | None = None

    def _frontend(self, path: str, gateway: Gateway) -> Frontend | None:
        if path == "/v1/chat/completions":
            return OPENAI_CHAT
        if path == "/v1/messages":
            if self._anthropic is None:
                self._anthropic = AnthropicMessages(Signer(gateway.settings.admin.master_key.get_secret_value()))
            return self._anthropic
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway: Gateway | None = scope.get("state", {}).get("gateway") if scope["type"] == "http" else None
        if gateway is None or scope["method"] != "POST" or (frontend := self._frontend(scope["path"], gateway)) is None:
            await self.app(scope, receive, send)
            return
        request_id: str = scope["state"]["request_id"]
        try:
            headers = Headers(scope=scope)
            body = await read_body(receive)
            ip = peer_ip(scope.get("client"), headers, gateway)
            call = Call(request_id, ip, api_key_of(headers), body, time.perf_counter())
            response = await handle_chat(gateway, call, frontend)
        except GatewayError as error:
            response = error_response(error, anthropic=frontend is not OPENAI_CHAT, request_id=request_id)
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            internal = InternalError("The gateway hit an internal error; it has been logged.")
            response = error_response(internal, anthropic=frontend is not OPENAI_CHAT, request_id=request_id)
        await response(scope, receive, send)
