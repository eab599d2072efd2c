"""The ASGI entry: request context, the billed endpoints served straight from ASGI, FastAPI behind.

    RequestContext     every HTTP request: an id, the body size cap (413) and read deadline (408),
                       one access log line and its request metrics when it ends (``app.logs``,
                       ``app.metrics``)
    BilledEndpoints    POST of a path with a ``Dialect`` (``Services.dialects``) -> ``pipeline.handle``;
                       anything else -> FastAPI (admin, models, probes, count_tokens)

The billed endpoints bypass FastAPI because its routing, dependency solving and middleware cost
~0.25 ms of CPU per request (measured with py-spy: a quarter of the gateway's time). They build the
same ``Inbound`` as the FastAPI routes and leave through the same ``errors.render``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import pipeline
from app.errors import GatewayError, InternalError, PayloadTooLarge, RequestTimeout, render
from app.inbound import AccessRecord, Inbound
from app.logs import log_access
from app.services import Services

log = logging.getLogger("seedgate")
_ids = random.Random()  # noqa: S311 -- request ids need uniqueness, not secrecy


def new_request_id() -> str:
    """``req_`` + 48 bits of milliseconds since the epoch + 48 random bits, in hex (like a UUIDv7).

    Unique, not secret: the PRNG spares a getrandom() syscall per request. Time first, so the unique
    ``request_id`` indexes of holds and usage grow at their right edge: a batch of settlements dirties
    one leaf page of each instead of one random page per request (bench/settle_cost.py: ~15 us less
    writer CPU per request once the tables are large).
    """
    return f"req_{time.time_ns() // 1_000_000:012x}{_ids.getrandbits(48):012x}"


class RequestContext:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_read_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_read_timeout = body_read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        record = AccessRecord(endpoint=scope["path"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["access"] = record
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_read_timeout
        limit = self.max_body_bytes
        received = 0
        body_done = False
        status = 0

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(f"The request body did not arrive within {self.body_read_timeout:g} s.") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
                body_done = not message.get("more_body", False)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, guarded_receive, watched_send)
        finally:
            client = state.get("client_ip") or (scope.get("client") or ("-",))[0]
            log_access(request_id, scope["method"], status, record, client, started)
            services: Services | None = state.get("services")
            if services is not None:
                observe(services, scope, status, record, started)


def observe(services: Services, scope: Scope, status: int, record: AccessRecord, started: float) -> None:
    """The request's share of ``seedgate_requests_total`` and the latency histograms."""
    endpoint = record.endpoint
    if endpoint.startswith("/"):  # not a billed endpoint: the route's template, so labels stay bounded
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
    now = time.perf_counter()
    ttft = record.first_token_at - started if record.first_token_at is not None else None
    services.metrics.request(endpoint, record.model, status, record.error_code, now - started, ttft)


class BilledEndpoints:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app  # FastAPI: every other route, the lifespan, the docs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services | None = scope.get("state", {}).get("services") if scope["type"] == "http" else None
        dialect = services.dialects.get(scope["path"]) if services is not None and scope["method"] == "POST" else None
        if services is None or dialect is None:
            await self.app(scope, receive, send)
            return
        settings = services.settings.server
        inbound = Inbound.of(scope, receive, trusted=services.trusted, max_body_bytes=settings.max_body_bytes)
        scope["state"]["client_ip"] = inbound.client_ip
        inbound.record.endpoint = dialect.endpoint
        try:
            response = await pipeline.handle(services, inbound, dialect)
        except GatewayError as error:
            inbound.record.error_code = error.code
            response = render(error, envelope=dialect.envelope, request_id=inbound.request_id)
        except Exception:
            log.exception("unhandled error on POST %s", scope["path"])
            inbound.record.error_code = InternalError.default_code
            internal = InternalError("The gateway hit an internal error; it has been logged.")
            response = render(internal, envelope=dialect.envelope, request_id=inbound.request_id)
        await response(scope, receive, send)
