import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.errors import (
    ContentPolicyViolation,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from app.settings import UpstreamSettings
from app.upstream import Upstream, UpstreamFailure, classify_error, error_fields, redact

UPSTREAM_KEY = "3f1c9a2e-7b4d-4e8f-9a10-abcdef012345"  # shaped like an Ark key
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(message: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "BadRequest", "code": code}})


# -- classify_error ------------------------------------------------------------------------------


def test_400_message_is_shown_after_redaction() -> None:
    message = (
        f"Invalid parameter 'temperature' (auth Bearer {UPSTREAM_KEY}, key sk-abcdef123456, "
        "token 0123456789abcdef0123456789abcdef01)"
    )
    failure = classify_error("ark", 400, error_body(message, "InvalidParameter"))
    assert isinstance(failure.error, InvalidRequest)
    assert failure.error.status == 400
    assert failure.error.code == "upstream_invalid_request"
    assert failure.error.message.startswith("The upstream rejected the request: Invalid parameter 'temperature'")
    for secret in (UPSTREAM_KEY, "sk-abcdef123456", "0123456789abcdef0123456789abcdef01"):
        assert secret not in failure.error.message
    assert "[redacted]" in failure.error.message
    assert (failure.retryable, failure.upstream_status, failure.upstream_code, failure.policy) == (
        False,
        400,
        "InvalidParameter",
        False,
    )


def test_400_message_is_truncated() -> None:
    failure = classify_error("ark", 400, error_body("x " * 5000))
    assert len(failure.error.message) <= 500


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe\x00garbage", b"[1, 2]", b'{"error": "flat"}'])
def test_400_without_an_error_object_gets_a_generic_message(raw) -> None:
    failure = classify_error("ark", 400, raw)
    assert isinstance(failure.error, InvalidRequest)
    assert failure.error.message == "The upstream service rejected the request."


@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (
            400,
            error_body(
                "The request failed because the input text may contain sensitive information.",
                "InputTextSensitiveContentDetected",
            ),
        ),
        (400, error_body("refused", "SensitiveContentDetected")),
        (400, error_body("refused", "content_policy_violation")),
        (451, b""),
    ],
)
def test_content_policy_refusals_become_451(status, raw) -> None:
    failure = classify_error("ark", status, raw)
    assert isinstance(failure.error, ContentPolicyViolation)
    assert failure.error.status == 451
    assert failure.policy
    assert not failure.retryable
    assert failure.upstream_status == status
    assert "sensitive information" not in failure.error.message


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failures_become_502_and_never_show_the_body(status) -> None:
    raw = error_body(f"The API key {UPSTREAM_KEY} is invalid for account 12345", "AuthenticationError")
    failure = classify_error("ark", status, raw)
    assert isinstance(failure.error, UpstreamError)
    assert failure.error.status == 502
    assert not failure.retryable
    rendered = orjson.dumps(failure.error.openai_body()).decode()
    assert UPSTREAM_KEY not in rendered
    assert "account" not in rendered
    assert "invalid" not in rendered


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", "7"),
        ("2.9", "2"),
        (None, "1"),
        ("0", "1"),
        ("-5", "1"),
        ("1000", "60"),
        ("soon", "1"),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "1"),
        ("inf", "1"),
        ("nan", "1"),
        ("1e400", "1"),
    ],
)
def test_429_is_retryable_and_carries_retry_after(header, seconds) -> None:
    failure = classify_error("ark", 429, error_body("slow down", "RateLimitExceeded"), header)
    assert isinstance(failure.error, RateLimited)
    assert failure.error.status == 429
    assert failure.retryable
    assert failure.error.headers == {"retry-after": seconds}
    assert failure.upstream_code == "RateLimitExceeded"


@pytest.mark.parametrize(
    ("status", "kind", "client_status"),
    [
        (500, UpstreamError, 502),
        (502, UpstreamError, 502),
        (503, ServiceUnavailable, 503),
        (504, UpstreamTimeout, 504),
    ],
)
def test_server_errors_are_retryable_and_hide_the_body(status, kind, client_status) -> None:
    failure = classify_error("ark", status, error_body(f"internal trace with {UPSTREAM_KEY}"))
    assert isinstance(failure.error, kind)
    assert failure.error.status == client_status
    assert failure.retryable
    assert UPSTREAM_KEY not in failure.error.message


def test_413_and_422() -> None:
    too_large = classify_error("ark", 413, b"")
    assert isinstance(too_large.error, PayloadTooLarge)
    assert not too_large.retryable
    unprocessable = classify_error("ark", 422, error_body("bad field"))
    assert isinstance(unprocessable.error, InvalidRequest)
    assert unprocessable.error.message == "The upstream rejected the request: bad field"


def test_unexpected_statuses_are_502_and_not_retried() -> None:
    failure = classify_error("ark", 302, b"")
    assert isinstance(failure.error, UpstreamError)
    assert not failure.retryable


def test_error_fields_reads_code_and_message() -> None:
    assert error_fields(error_body("m", "c")) == ("c", "m")
    assert error_fields(b'{"error": {"code": 42, "message": ["x"]}}') == ("42", None)
    assert error_fields(b"null") == (None, None)


def test_redact_keeps_ordinary_text() -> None:
    assert redact("max_tokens must be <= 32768") == "max_tokens must be <= 32768"
    assert redact(f"key {UPSTREAM_KEY}") == "key [redacted]"


# -- Upstream.open over loopback -----------------------------------------------------------------


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start a loopback HTTP server answering every request with ``handler``; yields its base URL."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/api/v3"))

    try:
        yield start
    finally:
        for server in servers:
            await server.close()


@pytest.fixture
async def make_upstream() -> AsyncIterator[Callable[..., Upstream]]:
    made: list[Upstream] = []

    def make(base_url: str, **options: float) -> Upstream:
        settings = UpstreamSettings(name="ark", base_url=base_url, api_key=UPSTREAM_KEY, **options)
        upstream = Upstream(settings)
        made.append(upstream)
        return upstream

    try:
        yield make
    finally:
        for upstream in made:
            await upstream.aclose()


async def test_200_returns_the_open_response_and_sends_key_and_body(serve, make_upstream) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["path"] = request.path
        seen["authorization"] = request.headers.get("authorization")
        seen["body"] = await request.json()
        return web.json_response({"id": "x", "choices": []})

    upstream = make_upstream(await serve(handler))
    response = await upstream.open({"model": "m", "messages": []})
    try:
        assert response.status == 200
        chunks = [chunk async for chunk in response.aiter_bytes()]
    finally:
        await response.aclose()
    assert orjson.loads(b"".join(chunks)) == {"id": "x", "choices": []}
    assert seen == {
        "path": "/api/v3/chat/completions",
        "authorization": f"Bearer {UPSTREAM_KEY}",
        "body": {"model": "m", "messages": []},
    }


async def test_connect_error_is_a_retryable_502(make_upstream) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    upstream = make_upstream(f"http://127.0.0.1:{port}", connect_timeout=2)
    with pytest.raises(UpstreamFailure) as info:
        await upstream.open({"model": "m"})
    assert isinstance(info.value.error, UpstreamError)
    assert info.value.error.status == 502
    assert info.value.retryable


async def test_read_timeout_is_a_504_that_is_not_retried(serve, make_upstream) -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.wait_for(release.wait(), timeout=5)  # silent after accepting the request
        return web.json_response({})

    upstream = make_upstream(await serve(handler), read_timeout=30)
    try:
        with pytest.raises(UpstreamFailure) as info:
            await upstream.open({"model": "m"}, read_timeout=0.2)  # the per-model override applies
    finally:
        release.set()
    assert isinstance(info.value.error, UpstreamTimeout)
    assert info.value.error.status == 504
    assert not info.value.retryable


@pytest.mark.parametrize("status", [400, 401, 403, 500])
async def test_error_body_echoing_the_upstream_key_is_not_leaked(serve, make_upstream, status) -> None:
    async def handler(request: web.Request) -> web.Response:
        message = f"bad request from {request.headers['authorization']} ({UPSTREAM_KEY})"
        return web.Response(status=status, body=error_body(message, "Whatever"), content_type="application/json")

    upstream = make_upstream(await serve(handler))
    with pytest.raises(UpstreamFailure) as info:
        await upstream.open({"model": "m"})
    assert info.value.upstream_status == status
    rendered = orjson.dumps(info.value.error.openai_body()).decode()
    assert UPSTREAM_KEY not in rendered


async def test_429_over_the_wire_passes_retry_after(serve, make_upstream) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=429, body=error_body("slow"), headers={"Retry-After": "3"})

    upstream = make_upstream(await serve(handler))
    with pytest.raises(UpstreamFailure) as info:
        await upstream.open({"model": "m"})
    assert info.value.retryable
    assert info.value.error.headers["retry-after"] == "3"


async def test_redirects_are_not_followed(serve, make_upstream) -> None:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path.endswith("/elsewhere"):
            return web.json_response({"stolen": True})
        raise web.HTTPFound("/api/v3/elsewhere")

    upstream = make_upstream(await serve(handler))
    with pytest.raises(UpstreamFailure) as info:
        await upstream.open({"model": "m"})
    assert isinstance(info.value.error, UpstreamError)
    assert hits == ["/api/v3/chat/completions"]


async def test_huge_error_bodies_are_read_bounded(serve, make_upstream) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=500, body=b"x" * (4 * 1024 * 1024))

    upstream = make_upstream(await serve(handler))
    with pytest.raises(UpstreamFailure) as info:
        await upstream.open({"model": "m"})
    assert info.value.upstream_status == 500
    assert info.value.retryable


def test_a_400_whose_message_merely_mentions_sensitive_is_not_a_policy_refusal():
    raw = b'{"error": {"code": "InvalidParameter", "message": "model names are case-sensitive"}}'
    failure = classify_error("ark", 400, raw)
    assert failure.error.status == 400
    assert not failure.policy


def test_a_short_configured_upstream_key_echoed_in_a_400_is_scrubbed():
    raw = b'{"error": {"code": "InvalidParameter", "message": "bad key abc123xyz for this model"}}'
    failure = classify_error("ark", 400, raw, secrets=("abc123xyz",))
    assert "abc123xyz" not in failure.error.message


class _NeverCalled:
    async def post(self, body: bytes, *, read_timeout: float) -> Any:
        raise AssertionError("a body that cannot be encoded must not be sent")

    async def aclose(self) -> None:
        return None


async def test_a_body_too_deep_to_encode_is_a_400_never_a_500() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    upstream = Upstream(UpstreamSettings(name="ark", base_url="http://127.0.0.1:9/v1"), _NeverCalled())
    with pytest.raises(UpstreamFailure) as caught:
        await upstream.open({"model": "m", "messages": [{"role": "user", "content": deep}]})
    assert isinstance(caught.value.error, InvalidRequest)
    assert not caught.value.retryable
