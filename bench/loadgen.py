"""Closed-loop HTTP/1.1 load generator on raw asyncio streams, cheap enough to share a core.

Rules this module owns:

- Closed loop: `concurrency` workers, each on its own keep-alive connection, send one pre-built request,
  read the whole answer, and send the next. A worker stops at the deadline or when the shared request
  budget is spent, so every run is bounded in both time and count; each answer also has its own timeout.
- Latency is measured from the first byte written to the last byte of the body. For a stream, the time to
  first content byte (TTFB) is when the first SSE event with a non-empty `"content"` (chat) or `"delta"`
  (Responses API) string arrives.
- An answer counts as a success only if it is HTTP 200 and complete: a JSON body with `"choices"` (or a
  Responses API `"output"`), or an SSE body that ends with `data: [DONE]` (or whose last chunk holds the
  Responses API's `event: response.completed`). Anything else is counted under an error name, never retried;
  the connection is then dropped and reopened, so one bad answer cannot desynchronise the next.
- No HTTP client library: the request bytes are built once, the response is parsed with `readuntil` and
  `readexactly` only. Chunked bodies with trailers are supported; compression is not asked for.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field

_CONTENT = re.compile(rb'"(?:content|delta)"\s*:\s*"[^"]')
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:\s*chunked", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)
_TAIL = 64  # bytes kept from the previous chunk, so a marker split across chunks is still seen
_READ_LIMIT = 1 << 20


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """One complete HTTP/1.1 POST, ready to be written as is on every iteration."""
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(slots=True)
class Result:
    """What one run measured. Times are in seconds."""

    latencies: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    events: int = 0  # SSE `data:` events received in successful streams
    elapsed: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


class BadAnswer(Exception):
    """An answer that is not a complete success; the message names the error kind."""


@dataclass(slots=True)
class _Answer:
    status: int
    body: bytes
    first_content: float | None
    events: int
    keep_alive: bool


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, float | None, int]:
    first: float | None = None
    events = 0
    tail = b""
    last = b""
    for _ in range(10_000_000):  # bounded: ten million chunks is far beyond any answer we send
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers end with an empty line
                pass
            return tail + last, first, events
        data = await reader.readexactly(size + 2)
        events += data.count(b"data:")
        if first is None and _CONTENT.search(tail + data):
            first = time.perf_counter()
        tail = data[-_TAIL:]
        last = data
    raise BadAnswer("too_many_chunks")


async def _read_answer(reader: asyncio.StreamReader) -> _Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    keep_alive = _CLOSE.search(head) is None
    if _CHUNKED.search(head):
        body, first, events = await _read_chunked(reader)
        return _Answer(status, body, first, events, keep_alive)
    length = _LENGTH.search(head)
    if length is None:
        return _Answer(status, await reader.read(_READ_LIMIT), None, 0, False)
    body = await reader.readexactly(int(length.group(1)))
    return _Answer(status, body, None, 0, keep_alive)


def _check(answer: _Answer, stream: bool) -> None:
    if answer.status != 200:
        raise BadAnswer(f"http_{answer.status}")
    if stream:
        if b"[DONE]" not in answer.body[-_TAIL * 2 :] and b"event: response.completed" not in answer.body:
            raise BadAnswer("stream_without_done")
    elif b'"choices"' not in answer.body and b'"output"' not in answer.body:
        raise BadAnswer("body_without_choices")


@dataclass(slots=True)
class Job:
    """One run's fixed inputs: where to connect, what to send, and its bounds."""

    host: str
    port: int
    request: bytes
    stream: bool
    concurrency: int
    duration: float
    max_requests: int
    timeout: float = 30.0
    connect_stagger: float = 0.0  # seconds spread over the workers' first connects (1,000-stream case)


async def _worker(job: Job, index: int, deadline: float, budget: list[int], result: Result) -> None:
    if job.connect_stagger:
        await asyncio.sleep(job.connect_stagger * index / job.concurrency)
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(job.host, job.port, limit=_READ_LIMIT)
                started = time.perf_counter()
                writer.write(job.request)
                async with asyncio.timeout(job.timeout):
                    answer = await _read_answer(reader)
                finished = time.perf_counter()
                _check(answer, job.stream)
            except BadAnswer as exc:
                result.errors[str(exc)] += 1
                _drop(writer)
                writer = None
                continue
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1
                _drop(writer)
                writer = None
                await asyncio.sleep(0.01)  # a refused connect must not turn into a busy loop
                continue
            result.latencies.append(finished - started)
            if answer.first_content is not None:
                result.ttfb.append(answer.first_content - started)
            result.events += answer.events
            if not answer.keep_alive:
                _drop(writer)
                writer = None
    finally:
        _drop(writer)


def _drop(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


async def run(job: Job) -> Result:
    """Run `job` to its deadline or request budget, whichever comes first."""
    result = Result()
    started = time.perf_counter()
    deadline = started + job.duration
    budget = [job.max_requests]
    workers = [asyncio.create_task(_worker(job, i, deadline, budget, result)) for i in range(job.concurrency)]
    try:
        async with asyncio.timeout(job.duration + job.timeout + job.connect_stagger + 5):
            await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    result.elapsed = time.perf_counter() - started
    return result


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for an empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]
