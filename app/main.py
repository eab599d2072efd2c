"""The ASGI application: ``create_app(settings)`` wires routes, error rendering and the lifespan."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.asgi import HotPaths
from app.error_response import error_response, wants_anthropic
from app.errors import GatewayError, InternalError, InvalidRequest, NotFound, PayloadTooLarge
from app.fake_upstream import FakeUpstream
from app.routes import admin, anthropic, health, models
from app.services import Gateway
from app.settings import Settings

log = logging.getLogger("seedgate")

SETTLE_WAIT_SECONDS = 15.0
_ids = random.Random()  # noqa: S311 -- request ids need uniqueness, not secrecy


class RequestContext:
    """Pure ASGI middleware: a request id for every request, and the body size cap on received bytes."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # unique, not secret: the PRNG spares a getrandom() syscall per request
        request_id = f"req_{_ids.getrandbits(96):024x}"
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.max_body_bytes
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
            return message

        await self.app(scope, counted_receive, send)


@asynccontextmanager
async def demo_upstream(settings: Settings) -> AsyncIterator[Settings]:
    """Demo mode: every upstream is the built-in fake one, started on a free loopback port."""
    async with FakeUpstream("127.0.0.1", 0, echo=True, record_requests=False) as fake:
        upstreams = [
            u.model_copy(update={"base_url": fake.url, "api_key": SecretStr("demo")}) for u in settings.upstreams
        ]
        log.warning("DEMO MODE: answers come from the built-in fake upstream at %s", fake.url)
        yield settings.model_copy(update={"upstreams": upstreams})


def render_error(request: Request, error: GatewayError) -> Response:
    anthropic = wants_anthropic(request.url.path, "anthropic-version" in request.headers)
    return error_response(error, anthropic=anthropic, request_id=getattr(request.state, "request_id", None))


async def _gateway_error(request: Request, exc: Exception) -> Response:
    exc = cast(GatewayError, exc)
    return render_error(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    exc = cast(RequestValidationError, exc)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ())) or None
    return render_error(request, InvalidRequest(f"{where}: {first.get('msg', 'invalid value')}", param=where))


async def _http_error(request: Request, exc: Exception) -> Response:
    exc = cast(StarletteHTTPException, exc)
    if exc.status_code == 404:
        return render_error(request, NotFound(f"No route for {request.method} {request.url.path}."))
    error = InvalidRequest(str(exc.detail), code=f"http_{exc.status_code}")
    response = render_error(request, error)
    response.status_code = exc.status_code
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render_error(request, InternalError("The gateway hit an internal error; it has been logged."))


def create_app(settings: Settings, *, demo: bool = False) -> ASGIApp:
    """``RequestContext`` -> ``HotPaths`` (the two billed endpoints) -> FastAPI (everything else)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            effective = settings
            if demo:
                effective = await stack.enter_async_context(demo_upstream(settings))
            gateway = await Gateway.start(effective)
            app.state.gateway = gateway
            try:
                yield {"gateway": gateway}
            finally:
                # uvicorn already gave open streams their grace; this waits for their settlements
                await gateway.drain(SETTLE_WAIT_SECONDS)
                await gateway.aclose()

    app = FastAPI(title="Seedgate", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(anthropic.router)
    app.include_router(admin.router)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    return RequestContext(HotPaths(app), max_body_bytes=settings.server.max_body_bytes)
