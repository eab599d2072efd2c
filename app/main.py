"""The ASGI application: ``create_app(settings)`` wires routes, error rendering and the lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp

from app.asgi import BilledEndpoints, RequestContext
from app.errors import BaseUrlDoubledV1, GatewayError, InternalError, InvalidRequest, NotFound, envelope_for, render
from app.fake_upstream import FakeUpstream
from app.routes import admin, anthropic, console, health, me, metrics, models, responses, selfservice
from app.services import Services, TransportFactory
from app.settings import Settings

log = logging.getLogger("seedgate")

SETTLE_WAIT_SECONDS = 15.0


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
    record = getattr(request.state, "access", None)
    if record is not None:
        record.error_code = error.code
    envelope = envelope_for(request.url.path, anthropic_version="anthropic-version" in request.headers)
    return render(error, envelope=envelope, request_id=getattr(request.state, "request_id", None))


async def _gateway_error(request: Request, exc: Exception) -> Response:
    return render_error(request, cast(GatewayError, exc))


async def _validation_error(request: Request, exc: Exception) -> Response:
    exc = cast(RequestValidationError, exc)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ())) or None
    return render_error(request, InvalidRequest(f"{where}: {first.get('msg', 'invalid value')}", param=where))


async def _http_error(request: Request, exc: Exception) -> Response:
    exc = cast(StarletteHTTPException, exc)
    if exc.status_code == 404 and request.url.path.startswith("/v1/v1/"):
        return render_error(request, BaseUrlDoubledV1(request.method, request.url.path))
    if exc.status_code == 404:
        return render_error(request, NotFound(f"No route for {request.method} {request.url.path}."))
    error = InvalidRequest(str(exc.detail), code=f"http_{exc.status_code}")
    response = render_error(request, error)
    response.status_code = exc.status_code
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render_error(request, InternalError("The gateway hit an internal error; it has been logged."))


def create_app(settings: Settings, *, demo: bool = False, transport: TransportFactory | None = None) -> ASGIApp:
    """``RequestContext`` -> ``BilledEndpoints`` -> FastAPI (everything else); see ``app.asgi``.

    ``transport`` replaces the upstream HTTP client (tests run the whole flow in-process with it).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            effective = settings
            if demo:
                effective = await stack.enter_async_context(demo_upstream(settings))
            services = await Services.start(effective, transport=transport)
            app.state.services = services
            try:
                yield {"services": services}
            finally:
                # uvicorn already gave open streams their grace; this waits for their settlements
                await services.drain(SETTLE_WAIT_SECONDS)
                await services.aclose()

    # The schema lists every admin route: public only in demo mode (with /docs); otherwise it is
    # GET /admin/openapi.json, behind the master key like the rest of /admin.
    public_schema = "/openapi.json" if demo else None
    docs = "/docs" if demo else None
    app = FastAPI(
        title="Seedgate", version="0.1.0", lifespan=lifespan, openapi_url=public_schema, docs_url=docs, redoc_url=None
    )
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(anthropic.router)
    app.include_router(responses.router)
    app.include_router(admin.router)
    # issue 13: key-holder self-service, the console and /me
    app.include_router(selfservice.router)
    if settings.console.enabled:
        app.include_router(console.router)
        app.include_router(me.router)
    app.include_router(metrics.router)
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    # logging.access: false silences the access lines (the metrics still count every request)
    logging.getLogger("seedgate.access").disabled = not settings.logging.access
    server = settings.server
    return RequestContext(
        BilledEndpoints(app), max_body_bytes=server.max_body_bytes, body_read_timeout=server.body_read_timeout_seconds
    )
