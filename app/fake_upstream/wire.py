"""HTTP/1.1 wire format for the fake upstream: reading requests, encoding response heads and chunks.

Rules this module owns:

- A request head ends at the first blank line and may be at most `MAX_HEAD_BYTES`; a body is framed by
  `Transfer-Encoding: chunked` (which wins) or `Content-Length`, else it is empty, and may be at most
  `MAX_BODY_BYTES`. `Expect: 100-continue` is answered before the body is read.
- Keep-alive follows HTTP/1.1: persistent unless `Connection: close`; HTTP/1.0 only with
  `Connection: keep-alive`.
- Anything else malformed raises `WireError`, answered with its status and then a closed connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_MAX_CHUNKS = 1_000_000
_CRLF = b"\r\n"
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
LAST_CHUNK = b"0\r\n\r\n"


class WireError(Exception):
    """The peer sent something this server will not parse."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """Read one request; None when the peer closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise WireError(400, "connection closed inside the request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise WireError(431, "request head too large") from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise WireError(400, f"bad request line {lines[0][:100]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise WireError(400, f"bad header line {line[:100]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    path, _, query = target.partition("?")
    body = await _read_body(reader, headers)
    return Request(method=method, path=path, query=query, headers=headers, body=body, keep_alive=keep_alive)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    length_text = headers.get("content-length")
    if length_text is None:
        return b""
    if not length_text.isdigit():
        raise WireError(400, "bad content-length")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise WireError(413, "request body too large")
    return await reader.readexactly(length)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    pieces: list[bytes] = []
    total = 0
    for _ in range(_MAX_CHUNKS):
        size_line = await reader.readuntil(_CRLF)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise WireError(400, "bad chunk size") from None
        if size == 0:
            await _skip_trailers(reader)
            return b"".join(pieces)
        total += size
        if total > MAX_BODY_BYTES:
            raise WireError(413, "request body too large")
        data = await reader.readexactly(size + 2)
        if data[-2:] != _CRLF:
            raise WireError(400, "chunk not followed by CRLF")
        pieces.append(data[:-2])
    raise WireError(400, "too many chunks")


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    for _ in range(100):
        if await reader.readuntil(_CRLF) == _CRLF:
            return
    raise WireError(400, "too many trailers")


def response_head(status: int, headers: Iterable[tuple[str, str]], *, keep_alive: bool) -> bytes:
    status_line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status {status}\r\n".encode()
    lines = [status_line, *(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)]
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(_CRLF)
    return b"".join(lines)


def full_response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    content_type: str = "application/json",
    extra: dict[str, str] | None = None,
) -> bytes:
    """A complete `Content-Length` response; `extra` headers override same-named defaults."""
    headers = {"content-type": content_type, "content-length": str(len(body))}
    if extra:
        headers.update((k.lower(), v) for k, v in extra.items())
    return response_head(status, headers.items(), keep_alive=keep_alive) + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)
