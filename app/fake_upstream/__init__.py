"""A scriptable fake OpenAI-compatible upstream on loopback, for end-to-end tests, demo mode and benchmarks.

It is a real HTTP/1.1 server written on `asyncio.start_server`, so faults (resets, 1-byte writes,
malformed SSE, hangs) land exactly where a `Script` puts them. Module map:

- `script`: the `Script` / `ToolCall` data and the default-usage formula.
- `completion`: what is read from a chat request, the response bodies and stream payloads.
- `stream`: SSE writing with faults; `wire`: HTTP/1.1 parsing and framing.
- `state`: queue, named scripts, recorded requests; `server`: `FakeUpstream` and routing.
- `thread`: `FakeUpstreamThread`; `__main__`: the standalone command.

Usage::

    async with FakeUpstream() as fake:            # or FakeUpstreamThread() in synchronous tests
        fake.enqueue({"status": 429, "headers": {"retry-after": "1"}})
        fake.enqueue_for_model("sub-model", {"content": "only requests for sub-model get this"})
        fake.set_named("tools", Script.from_dict({"tool_calls": [{"id": "c1", "name": "f", "arguments": "{}"}]}))
        ...  # point the gateway at fake.url; "#script:tools" in a message picks the named script
        assert fake.requests[0]["body"]["model"] == "m"
"""

from app.fake_upstream.script import DEFAULT_CONTENT, Script, ToolCall
from app.fake_upstream.server import FakeUpstream
from app.fake_upstream.state import RecordedRequest
from app.fake_upstream.thread import FakeUpstreamThread

__all__ = ["DEFAULT_CONTENT", "FakeUpstream", "FakeUpstreamThread", "RecordedRequest", "Script", "ToolCall"]
