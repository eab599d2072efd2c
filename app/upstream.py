"""Calls to an OpenAI-compatible upstream, and what their failures mean to the client.

One pooled ``httpx.AsyncClient`` per upstream, explicit timeouts (connect; read = idle time between
bytes; a total deadline enforced by the caller), no redirects. ``UpstreamFailure`` carries the
``GatewayError`` to show the client and whether another attempt is safe: only when the upstream never
accepted the request (connect error, pool timeout, or an HTTP 429/5xx answer).

Upstream error bodies are read (bounded) only to classify them; a 400's message may be shown to the
client after redaction, 401/403/5xx bodies never are (they can echo the upstream key).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from app.errors import (
    ContentPolicyViolation,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from app.settings import UpstreamSettings

log = logging.getLogger("seedgate.upstream")

MAX_ERROR_BODY = 64 * 1024
_POLICY_MARKERS = ("sensitive", "content_filter", "content_policy", "moderation", "risk")
_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+|[A-Za-z0-9_\-]{32,})")


@dataclass(slots=True)
class UpstreamFailure(Exception):
    error: GatewayError
    retryable: bool
    upstream_status: int | None = None
    upstream_code: str | None = None
    policy: bool = False
    retry_after: float | None = None  # seconds the upstream asked us to wait (429/503)
    attempts: int = 1


class Upstream:
    """One configured upstream: its settings and its connection pool."""

    def __init__(self, settings: UpstreamSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = settings.name
        self.settings = settings
        self.url = settings.base_url + "/chat/completions"
        self._headers = {
            "authorization": f"Bearer {settings.api_key.get_secret_value()}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
        }
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.connect_timeout,
                read=settings.read_timeout,
                write=settings.connect_timeout,
                pool=settings.connect_timeout,
            ),
            limits=httpx.Limits(
                max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
            ),
            follow_redirects=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def open(self, body: dict[str, Any], *, read_timeout: float | None = None) -> httpx.Response:
        """Send a chat request; return the 200 response with its body not yet read.

        Raises ``UpstreamFailure`` for every other outcome, the response already closed.
        ``read_timeout`` overrides the upstream's idle timeout (per model: reasoning models are slow).
        """
        extensions = {}
        if read_timeout is not None:
            s = self.settings
            timeout = httpx.Timeout(
                connect=s.connect_timeout, read=read_timeout, write=s.connect_timeout, pool=s.connect_timeout
            )
            extensions["timeout"] = timeout.as_dict()
        request = self.client.build_request(
            "POST", self.url, content=orjson.dumps(body), headers=self._headers, extensions=extensions
        )
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            log.warning("upstream %s unreachable: %s", self.name, type(exc).__name__)
            raise UpstreamFailure(UpstreamError("The upstream service is unreachable."), retryable=True) from None
        except httpx.TimeoutException:
            raise UpstreamFailure(UpstreamTimeout("The upstream service timed out."), retryable=False) from None
        except httpx.HTTPError as exc:
            log.warning("upstream %s transport error: %s", self.name, type(exc).__name__)
            raise UpstreamFailure(UpstreamError("The upstream connection failed."), retryable=False) from None
        if response.status_code == 200:
            return response
        try:
            raw = await _read_bounded(response.aiter_bytes(), MAX_ERROR_BODY)
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
        raise classify_error(self.name, response.status_code, raw, response.headers.get("retry-after"))


async def _read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])


def redact(text: str) -> str:
    return _SECRETISH.sub("[redacted]", text)


def error_fields(raw: bytes) -> tuple[str | None, str | None]:
    """(code, message) of an OpenAI/Ark error body, when it has that shape."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None, None
    code, message = err.get("code"), err.get("message")
    return (str(code) if code is not None else None), (message if isinstance(message, str) else None)


def is_policy_code(code: str | None, message: str | None = None) -> bool:
    text = f"{code or ''} {message or ''}".lower()
    return any(marker in text for marker in _POLICY_MARKERS)


def classify_error(name: str, status: int, raw: bytes, retry_after: str | None = None) -> UpstreamFailure:
    code, message = error_fields(raw)
    log.warning("upstream %s answered HTTP %s (code %s)", name, status, code)
    if status == 451 or (status == 400 and is_policy_code(code, message)):
        return UpstreamFailure(
            ContentPolicyViolation("The request or its answer was refused by the content policy."),
            retryable=False,
            upstream_status=status,
            upstream_code=code,
            policy=True,
        )
    if status in (400, 422):
        shown = redact(message)[:500] if message else "The upstream service rejected the request."
        return UpstreamFailure(InvalidRequest(shown, code="upstream_invalid_request"), False, status, code)
    if status == 413:
        return UpstreamFailure(PayloadTooLarge("The request is too large for the upstream."), False, status, code)
    if status == 429:
        seconds = _retry_after_seconds(retry_after)
        failure = UpstreamFailure(
            RateLimited(
                "The upstream service is rate limiting; retry shortly.",
                code="upstream_rate_limited",
                headers={"retry-after": str(seconds)},
                fallback_suggestion=f"retry after {seconds} seconds",
            ),
            True,
            status,
            code,
        )
        failure.retry_after = float(seconds)
        return failure
    if status == 503:
        failure = UpstreamFailure(ServiceUnavailable("The upstream service is temporarily unavailable."), True, status)
        failure.retry_after = float(_retry_after_seconds(retry_after)) if retry_after else None
        return failure
    if status == 504:
        return UpstreamFailure(UpstreamTimeout("The upstream service timed out."), True, status)
    retryable = status >= 500
    return UpstreamFailure(UpstreamError(f"The upstream service failed (HTTP {status})."), retryable, status, code)


def _retry_after_seconds(value: str | None) -> int:
    try:
        seconds = int(float(value)) if value is not None else 1
    except (ValueError, OverflowError):  # "inf" parses as a float but is no integer
        seconds = 1
    return min(max(seconds, 1), 60)
