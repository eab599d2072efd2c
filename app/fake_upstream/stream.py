"""SSE stream writing for the fake upstream, with the script's faults placed exactly.

The body is `Transfer-Encoding: chunked`, one HTTP chunk per SSE block (or per byte with
`byte_by_byte`), each written and drained before the next, so clients see the split the script asks for.
For event index `i` (0-based, counting `data:` events written so far) the order is: `event_delay`
sleep (not before the first event), a `: keepalive` comment when `i` is a positive multiple of
`comment_every`, the broken `data: {not json` block when `i == malformed_after_events`, then the event;
after the event, when `i + 1 == reset_after_events`, the TCP connection is reset (SO_LINGER 0 +
`transport.abort()`: no terminating chunk, no `[DONE]`). `reset_after_events=0` resets right after the
response head; counters beyond the last event never fire, except `malformed_after_events` equal to the
event count, which puts the broken block last. With `multiline_data` every JSON event is indented and
sent as one `data:` line per line, which an SSE client joins back with newlines.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import orjson

from app.fake_upstream.script import Script
from app.fake_upstream.wire import LAST_CHUNK, chunk, response_head

_HEADERS = (("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("transfer-encoding", "chunked"))


def stream_head(script: Script, *, keep_alive: bool) -> bytes:
    headers = dict(_HEADERS)
    headers.update((k.lower(), v) for k, v in script.headers.items())
    return response_head(200, headers.items(), keep_alive=keep_alive)


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def data_lines(payload: bytes, multiline: bool, end: bytes = b"\n") -> bytes:
    """The `data:` field(s) of one event, without the blank line that ends it."""
    if not multiline or not payload.startswith(b"{"):
        return b"data: " + payload
    lines = orjson.dumps(orjson.loads(payload), option=orjson.OPT_INDENT_2).split(b"\n")
    return end.join(b"data: " + line for line in lines)


async def write_stream(writer: asyncio.StreamWriter, script: Script, payloads: list[bytes], head: bytes) -> bool:
    """Write the whole SSE response; False when the connection was reset and must not be reused."""
    end = script.line_ending.encode()
    blank = end + end

    async def send(block: bytes) -> None:
        if script.byte_by_byte:
            for i in range(len(block)):
                writer.write(chunk(block[i : i + 1]))
                await writer.drain()
        else:
            writer.write(chunk(block))
            await writer.drain()

    writer.write(head)
    await writer.drain()
    if script.reset_after_events == 0:
        reset(writer)
        return False
    for index, payload in enumerate(payloads):
        if index:
            if script.event_delay:
                await asyncio.sleep(script.event_delay)
            if script.comment_every and index % script.comment_every == 0:
                await send(b": keepalive" + blank)
        if script.malformed_after_events == index:
            await send(b"data: {not json" + blank)
        await send(data_lines(payload, script.multiline_data, end) + blank)
        if script.reset_after_events == index + 1:
            reset(writer)
            return False
    if script.malformed_after_events == len(payloads):
        await send(b"data: {not json" + blank)
    writer.write(LAST_CHUNK)
    await writer.drain()
    return True
