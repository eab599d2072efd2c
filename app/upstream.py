"""Calls to an OpenAI-compatible upstream, and what their failures mean to the client.

Every call goes through a ``Transport`` (aiohttp in production, an in-process fake in tests), with
explicit timeouts (connect; read = idle time between bytes; a total deadline enforced by the caller)
and no redirects. ``UpstreamFailure`` carries the ``GatewayError`` to show the client, whether
another attempt is safe (only when the upstream never accepted the request: connect error, pool
timeout, or an HTTP 429/5xx answer), and whether the upstream worked on it (``accepted``: it timed
out holding the request, so the operator is billed and so is the key).

Upstream error bodies are read (bounded) only to classify them; a 400's message reaches the client
only as ``app.upstream_messages`` digests it (no hosts, accounts, endpoints or keys), 401/403/5xx
bodies never do (they can echo the upstream key). The upstream's own text rides on the failure
(``upstream_message``) for the log and ``upstream_errors``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
import yarl

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
from app.upstream_messages import client_message, client_param, operator_text

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
    accepted: bool = False  # the upstream had the request and worked on it (it bills the operator)
    upstream_name: str | None = None  # which upstream answered with an HTTP error
    upstream_message: str | None = None  # its own text, for the log and the admin view only


class UpstreamUnreachable(Exception):
    """The request never reached the upstream (connect error or timeout): another attempt is safe."""


class UpstreamSilent(Exception):
    """The upstream took the request, then sent nothing within the idle timeout."""


class UpstreamReadError(Exception):
    """The upstream connection broke while the request was sent or its answer was read."""


class UpstreamReadTimeout(UpstreamReadError):
    """The upstream went silent for longer than the idle timeout while its answer was being read."""


class UpstreamResponse(Protocol):
    """An upstream answer whose body is read as it arrives; ``aclose`` must always be called."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class Transport(Protocol):
    """THE seam between the gateway and an upstream: one POST of a Chat Completions body.

    Raises ``UpstreamUnreachable``, ``UpstreamSilent`` or ``UpstreamReadError``; any HTTP status is an
    answer. Production uses ``AiohttpTransport``; tests plug in an in-process one.
    """

    async def post(self, body: bytes, *, read_timeout: float) -> UpstreamResponse: ...
    async def aclose(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        connection = self._response.connection
        if connection is not None and connection.protocol is not None:
            # Once the whole body has arrived, upstream silence means nothing. aiohttp re-arms its idle
            # timer (``sock_read``) whenever reading resumes -- also after the body ended, when a slow
            # client lets the gateway drain the buffered tail only later -- and its expiry would then
            # throw away that tail. With no timeout set, resuming arms nothing; the next request on the
            # pooled connection sets its own.
            protocol = connection.protocol
            self._response.content.on_eof(lambda: setattr(protocol, "read_timeout", None))
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.SocketTimeoutError, TimeoutError):
            raise UpstreamReadTimeout from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamReadError(type(exc).__name__) from None

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # fully read: the connection goes back to the pool
        else:
            self._response.close()  # cut short: the connection cannot be reused


class AiohttpTransport:
    """One pooled aiohttp session per upstream.

    aiohttp, not httpx: measured on this project's fake upstream, an httpx request costs ~0.8 ms of
    CPU, httpx on an aiohttp transport ~0.46 ms, plain aiohttp ~0.13 ms -- the gateway's whole CPU
    budget per request is 1 ms. Nothing else imports aiohttp.
    """

    def __init__(self, settings: UpstreamSettings) -> None:
        self._settings = settings
        self._url = yarl.URL(settings.base_url + "/chat/completions")  # parsed once, not per request
        self._headers = {
            "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None

    def _timeout(self, read_timeout: float) -> aiohttp.ClientTimeout:
        # total is enforced by the caller's deadline; sock_read is the idle time between bytes
        timeout = self._timeouts.get(read_timeout)
        if timeout is None:
            connect = self._settings.connect_timeout
            timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=read_timeout)
            self._timeouts[read_timeout] = timeout
        return timeout

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it needs the running loop
            connector = aiohttp.TCPConnector(limit=self._settings.max_connections, limit_per_host=0, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, trust_env=False)
        return self._session

    async def post(self, body: bytes, *, read_timeout: float) -> UpstreamResponse:
        try:
            response = await self.session.post(
                self._url, data=body, timeout=self._timeout(read_timeout), allow_redirects=False
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamUnreachable(type(exc).__name__) from None
        except (aiohttp.SocketTimeoutError, TimeoutError):
            raise UpstreamSilent from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamReadError(type(exc).__name__) from None
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class Upstream:
    """One configured upstream: its settings, its transport, and what its failures mean."""

    def __init__(self, settings: UpstreamSettings, transport: Transport | None = None) -> None:
        self.name = settings.name
        self.settings = settings
        self._transport = transport or AiohttpTransport(settings)
        self._api_key = settings.api_key.get_secret_value()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def open(self, body: dict[str, Any], *, read_timeout: float | None = None) -> UpstreamResponse:
        """Send a chat request; return the 200 response with its body not yet read.

        Raises ``UpstreamFailure`` for every other outcome, the response already closed.
        ``read_timeout`` overrides the upstream's idle timeout (per model: reasoning models are slow).
        """
        try:
            payload = orjson.dumps(body)
        except orjson.JSONEncodeError:  # app.json refuses deep bodies first; never a 500 if one slips by
            raise UpstreamFailure(InvalidRequest("The request cannot be encoded as JSON."), retryable=False) from None
        try:
            response = await self._transport.post(payload, read_timeout=read_timeout or self.settings.read_timeout)
        except UpstreamUnreachable as exc:
            log.warning("upstream %s unreachable: %s", self.name, exc)
            raise UpstreamFailure(UpstreamError("The upstream service is unreachable."), retryable=True) from None
        except UpstreamSilent:
            # it has the request and is working on it (a long non-stream answer): the operator pays for it
            error = UpstreamTimeout("The upstream service timed out.")
            raise UpstreamFailure(error, retryable=False, accepted=True) from None
        except UpstreamReadError as exc:
            log.warning("upstream %s transport error: %s", self.name, exc)
            raise UpstreamFailure(UpstreamError("The upstream connection failed."), retryable=False) from None
        if response.status == 200:
            return response
        try:
            raw = await _read_bounded(response.aiter_bytes(), MAX_ERROR_BODY)
        except UpstreamReadError:
            raw = b""
        finally:
            await response.aclose()
        raise classify_error(
            self.name, response.status, raw, response.headers.get("retry-after"), secrets=(self._api_key,)
        )


async def _read_bounded(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
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


def _error_param(raw: bytes) -> object:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    return err.get("param") if isinstance(err, dict) else None


def is_policy_code(code: str | None) -> bool:
    """Judged on the error code alone: a message saying "case-sensitive" is no policy refusal."""
    lowered = (code or "").lower()
    return any(marker in lowered for marker in _POLICY_MARKERS)


def classify_error(
    name: str, status: int, raw: bytes, retry_after: str | None = None, *, secrets: tuple[str, ...] = ()
) -> UpstreamFailure:
    """What an upstream HTTP error means for the client; ``secrets`` are scrubbed from any shown text."""
    code, message = error_fields(raw)
    kept = operator_text(message, secrets)
    log.warning("upstream %s answered HTTP %s (code %s): %s", name, status, code, kept)
    failure = _classify(status, code, message, retry_after, secrets, raw)
    failure.upstream_name, failure.upstream_message = name, kept
    return failure


def _classify(
    status: int, code: str | None, message: str | None, retry_after: str | None, secrets: tuple[str, ...], raw: bytes
) -> UpstreamFailure:
    if status == 451 or (status == 400 and is_policy_code(code)):
        return UpstreamFailure(
            ContentPolicyViolation("The request or its answer was refused by the content policy."),
            retryable=False,
            upstream_status=status,
            upstream_code=code,
            policy=True,
        )
    if status in (400, 422):
        # only the gateway's digest of the upstream's text: app.upstream_messages owns what may be shown
        shown = InvalidRequest(
            client_message(message, secrets), param=client_param(_error_param(raw)), code="upstream_invalid_request"
        )
        return UpstreamFailure(shown, False, status, code)
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
