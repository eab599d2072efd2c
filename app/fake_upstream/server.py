"""The fake upstream server: raw `asyncio.start_server`, HTTP/1.1 keep-alive, routing.

Routes:

- `POST .../chat/completions` (`/v1/...`, `/api/v3/...`, any prefix): answered from the selected script.
- `GET .../models`: a small OpenAI-shaped model list.
- `/_control/...` (JSON, never recorded): `POST /_control/scripts` `{"scripts": [...]}` appends to the
  queue (with `"model": NAME`, to the queue of requests for that model); `PUT /_control/named/{name}`
  stores one script; `GET /_control/requests` lists recorded requests; `POST /_control/reset` clears
  the queues, named scripts and recorded requests.
- Anything else: a 404 OpenAI error envelope.

Every non-control request is recorded (method, path, query, lowercased headers, parsed JSON body or
null) before it is answered, unless `record_requests=False` (long benchmarks). Connection write
buffers are kept at zero so `drain()` returns only once the kernel holds the bytes: a reset or a
one-byte write then happens exactly where the script puts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

import orjson

from app.fake_upstream.completion import ChatRequest, completion_body, stream_payloads
from app.fake_upstream.script import Script
from app.fake_upstream.state import RecordedRequest, State
from app.fake_upstream.stream import stream_head, write_stream
from app.fake_upstream.wire import Request, WireError, full_response, read_request

_MAX_REQUESTS_PER_CONNECTION = 1_000_000
_HANG_READ_LIMIT = 64 * 1024 * 1024
_ACCEPT_SETTLE_TURNS = 10
_MODEL_IDS = (
    "fake-model",
    "doubao-seed-2-0-pro-260215",
    "doubao-seed-2-0-lite-260215",
    "doubao-seed-2-0-mini-260215",
    "doubao-seed-2-0-code-260215",
)
_MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 1_739_577_600, "owned_by": "fake"} for i in _MODEL_IDS],
    }
)


def _error(message: str, *, type_: str = "invalid_request_error", code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


class FakeUpstream:
    """A scriptable OpenAI-compatible upstream on loopback; see the package docstring for usage."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        echo: bool = False,
        default: Script | dict[str, Any] | None = None,
        record_requests: bool = True,
    ) -> None:
        self.host = host
        self._port = port
        self.echo = echo
        self.default = Script() if default is None else Script.coerce(default)
        self.record_requests = record_requests
        self._state = State()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL including `/v1`, as an OpenAI client's `base_url`."""
        return f"http://{self.host}:{self._port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._state.requests()

    def enqueue(self, *scripts: Script | dict[str, Any]) -> None:
        self._state.enqueue([Script.coerce(s) for s in scripts])

    def enqueue_for_model(self, model: str, *scripts: Script | dict[str, Any]) -> None:
        self._state.enqueue_for_model(model, [Script.coerce(s) for s in scripts])

    def set_named(self, name: str, script: Script | dict[str, Any]) -> None:
        self._state.set_named(name, Script.coerce(script))

    def reset(self) -> None:
        self._state.reset()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # An accepted connection takes a few loop turns to reach _serve, and CPython 3.11 leaks one whose
        # transport is created after Server.close(). Settling before and after close() lets every
        # in-flight accept register, so it is cancelled (and its socket closed) below.
        for _ in range(_ACCEPT_SETTLE_TURNS):
            await asyncio.sleep(0)
        server.close()
        for _ in range(_ACCEPT_SETTLE_TURNS):
            await asyncio.sleep(0)
        connections = list(self._connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        writer.transport.set_write_buffer_limits(high=0)
        try:
            for _ in range(_MAX_REQUESTS_PER_CONNECTION):
                request = await read_request(reader, writer)
                if request is None or not await self._dispatch(request, reader, writer):
                    break
        except WireError as exc:
            writer.write(full_response(exc.status, _error(exc.message), keep_alive=False))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent garbage mid-body: nothing left to answer
        except asyncio.CancelledError:
            # stop() cancels connections; ending normally keeps Python 3.11's start_server callback
            # from logging the cancellation as an unhandled error.
            pass
        except Exception as exc:  # a bug here must surface as a readable 500, not a silent hang
            body = _error(f"fake upstream internal error: {exc!r}", type_="server_error")
            with contextlib.suppress(Exception):
                writer.write(full_response(500, body, keep_alive=False))
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; returns whether the connection may serve another."""
        path, keep_alive = request.path, request.keep_alive
        body = _parse_json(request.body)
        if path.startswith("/_control/"):
            status, payload = self._control(request.method, path, body)
            writer.write(full_response(status, payload, keep_alive=keep_alive))
            return keep_alive
        if self.record_requests:
            self._state.record(
                {
                    "method": request.method,
                    "path": path,
                    "query": request.query,
                    "headers": request.headers,
                    "body": body,
                }
            )
        if path.endswith("/chat/completions") and request.method == "POST":
            return await self._chat(body, keep_alive, reader, writer)
        if path.endswith("/models") and request.method == "GET":
            writer.write(full_response(200, _MODELS_BODY, keep_alive=keep_alive))
        else:
            message = f"fake upstream has no route {request.method} {path}"
            writer.write(full_response(404, _error(message, code="not_found"), keep_alive=keep_alive))
        return keep_alive

    async def _chat(
        self, body: Any, keep_alive: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if not isinstance(body, dict):
            writer.write(full_response(400, _error("request body must be a JSON object"), keep_alive=keep_alive))
            return keep_alive
        chat = ChatRequest.from_body(body)
        try:
            script = self._state.select(chat.marker, chat.model) or self.default
        except LookupError as exc:
            payload = _error(str(exc), type_="server_error", code="unknown_script")
            writer.write(full_response(500, payload, keep_alive=keep_alive))
            return keep_alive
        if script.hang:
            await _wait_for_eof(reader)
            return False
        if script.delay_before_headers:
            await asyncio.sleep(script.delay_before_headers)
        keep_alive = keep_alive and not script.close_connection
        if script.status != 200:
            payload = orjson.dumps(script.error_body)
            writer.write(full_response(script.status, payload, keep_alive=keep_alive, extra=script.headers))
        else:
            content = script.content if script.content is not None else chat.default_content(echo=self.echo)
            if chat.stream:
                payloads = stream_payloads(script, chat, content)
                head = stream_head(script, keep_alive=keep_alive)
                return await write_stream(writer, script, payloads, head) and keep_alive
            payload = completion_body(script, chat, content)
            writer.write(full_response(200, payload, keep_alive=keep_alive, extra=script.headers))
        await writer.drain()
        return keep_alive

    def _control(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        route = (method, path)
        try:
            if route == ("POST", "/_control/scripts"):
                scripts = body.get("scripts") if isinstance(body, dict) else None
                model = body.get("model") if isinstance(body, dict) else None
                if not isinstance(scripts, list) or not isinstance(model, str | None):
                    raise ValueError('body must be {"scripts": [...]} with an optional "model": "name"')
                parsed = [Script.from_dict(s) for s in scripts]
                queued = self._state.enqueue(parsed) if model is None else self._state.enqueue_for_model(model, parsed)
                return 200, orjson.dumps({"queued": queued})
            if method == "PUT" and path.startswith("/_control/named/") and len(path) > len("/_control/named/"):
                name = path.removeprefix("/_control/named/")
                self._state.set_named(name, Script.from_dict(body))
                return 200, orjson.dumps({"name": name})
            if route == ("GET", "/_control/requests"):
                return 200, orjson.dumps({"requests": self._state.requests()})
            if route == ("POST", "/_control/reset"):
                self._state.reset()
                return 200, orjson.dumps({"ok": True})
        except ValueError as exc:
            return 400, _error(str(exc), code="bad_script")
        return 404, _error(f"no control route {method} {path}", code="not_found")


async def _wait_for_eof(reader: asyncio.StreamReader) -> None:
    """Never answer: swallow whatever the client sends until it goes away (or the server stops)."""
    received = 0
    while received < _HANG_READ_LIMIT:
        data = await reader.read(65536)
        if not data:
            return
        received += len(data)
