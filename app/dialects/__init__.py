"""One ``Dialect`` per client API, over the same request flow.

A dialect turns the client's body into a ``ChatRequest`` for the upstream (Chat Completions), and the
upstream's answer or stream back into the client's shape. It knows nothing of keys, money or
services: what it needs of the request is in ``Reply``. Errors it raises are ``GatewayError``s,
rendered in its ``envelope``.

    openai_chat.py    POST /v1/chat/completions (passthrough)
    anthropic/        POST /v1/messages (translated both ways)
    responses/        POST /v1/responses (translated both ways; stored responses)

Optional hooks a dialect may have (the pipeline looks them up, and calls them only if present):
``load(body, key_id)`` after authentication and before ``parse`` -> an awaitable of the body to parse
(server-side state such as ``previous_response_id``), or ``None`` when this body needs nothing; and
``on_complete(request, key_id)`` -> an ``async`` callable to await once the answer is complete, before
its last bytes go out (keeping the answer), or ``None`` when this request needs nothing; a failing one
is logged, never the client's problem. Both return ``None`` rather than an awaitable that does nothing:
they run on every request, and a coroutine made and awaited for nothing costs as much as the check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Protocol

from app.chat_request import TOOL_NAME, ChatRequest
from app.errors import Envelope, GatewayError

# names the client's tools the upstream cannot run and the gateway left out (every dialect)
DROPPED_TOOLS_HEADER = "x-seedgate-dropped-tools"
_NOT_IN_A_NAME = re.compile(r"[^a-zA-Z0-9_-]")  # what chat's TOOL_NAME does not allow


def tool_label(label: str) -> str:
    """A client's tool name or type as it may go into a header (``DROPPED_TOOLS_HEADER``) or an error
    message: ASCII letters, digits, ``_`` and ``-`` only, at most 64 of them (``"tool"`` if none is left)."""
    return _NOT_IN_A_NAME.sub("", label[:64]) or "tool"


def upstream_tool_name(name: str) -> str:
    """A client's tool name as chat allows it (``^[a-zA-Z0-9_-]{1,64}$``): itself when it already is; else
    its allowed characters, cut to 55, and a hash of the whole name (two names never become one). A
    translating dialect maps the model's calls back to the client's name."""
    if TOOL_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{_NOT_IN_A_NAME.sub('_', name)[:55]}_{digest}"


def runnable_function(call: Any) -> dict[str, Any] | None:
    """The ``function`` of an upstream's tool call that a client could run (it has a name), else None:
    a translating dialect leaves such a call out of its answer."""
    function = call.get("function") if type(call) is dict else None
    if type(function) is dict and type(function.get("name")) is str and function["name"]:
        return function
    return None


@dataclass(slots=True)
class Reply:  # not frozen: built on every request, and a frozen dataclass's __init__ costs ~0.3 us more
    """What shaping an answer needs to know about its request."""

    request_id: str
    model: str  # the public model id
    prompt_tokens: int  # the gateway's estimate, for streams that announce it first
    context: Any = None  # ``ChatRequest.context``: what the dialect kept from parsing


class StreamWriter(Protocol):
    """Client bytes for one relayed stream; each method may return ``b""``.

    A writer may also have ``flush() -> bytes``: what it held back from ``chunk`` to join with the
    events that follow (Responses merges the text pieces of a burst into one delta event). The relay
    calls it at the end of every write, so nothing is held while it waits for the upstream. And
    ``failed``: true once ``done`` had to end the stream with the dialect's failure event (the
    upstream's stream made no whole answer of its kind: a tool call without a name, interleaved
    arguments, no finish); the request is then billed and recorded as the upstream's error it was.
    """

    def start(self) -> bytes: ...
    def chunk(self, chunk: dict[str, Any], data: str) -> bytes: ...
    def done(self) -> bytes: ...
    def error(self, error: GatewayError) -> bytes: ...
    def heartbeat(self) -> bytes: ...


class Dialect(Protocol):
    endpoint: str  # recorded in usage rows
    envelope: Envelope

    def model_name(self, body: Any) -> str: ...
    def parse(self, body: Any) -> ChatRequest: ...
    def render(self, answer: dict[str, Any], raw: bytes, reply: Reply) -> bytes: ...
    def stream(self, request: ChatRequest, reply: Reply) -> StreamWriter: ...
