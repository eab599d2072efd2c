"""OpenAI ``chat.completion.chunk`` stream -> Anthropic Messages stream events (docs/protocol.md 3.4, 3.7).

Invariants of the produced stream:

- ``message_start`` first; then content blocks with indices contiguous from 0, exactly one open at a
  time; then ``message_delta`` (stop reason + cumulative usage) and ``message_stop``.
- ``reasoning_content`` deltas feed a ``thinking`` block; when it closes, a ``signature_delta`` carrying
  ``sign(full thinking text of the block)`` comes just before its ``content_block_stop``.
- ``content`` deltas feed a ``text`` block. Switching kind closes the open block and opens a new one.
- Each upstream tool call (told apart by ``app.dialects.tool_calls``) becomes one ``tool_use`` block,
  opened once its id and name are known and its first arguments came (calls announced together then
  argued in turn stay whole); earlier fragments are held and sent right after the start. Arguments that
  are a JSON object stream as they come, from their ``{`` on: the ``partial_json`` pieces concatenate to
  them. Any other arguments go out whole as the block closes, as ``{"_raw": ...}`` like the whole
  answer's (the SDKs parse after every delta and would raise). A tool call that has a name but never
  got an id (or arguments) is opened at ``finish``, with a synthetic id if needed.
- Upstream tool calls are otherwise assumed sequential (OpenAI and Ark send them so). An argument
  fragment for a block already closed cannot be delivered; the stream then ends in an ``error`` event
  instead of a ``tool_use`` with corrupt input. So does a tool call whose name never came.
- Empty deltas produce nothing: no empty blocks.
- A stream that ends without a ``finish_reason`` was cut: ``finish`` returns an ``error`` event, never
  ``end_turn``.
- ``message_delta.usage`` carries the real upstream usage (it arrives last, after the finish chunk); if
  none came, the input estimate and an estimate of the forwarded output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from app.dialects.anthropic.response import stop_reason_for, synthetic_tool_id, usage_to_anthropic
from app.dialects.anthropic.tokens import estimate_tokens_from_counts
from app.dialects.tool_calls import CallSlots
from app.json import dumps_compact

PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    data = dumps_compact(payload)  # lone surrogates (a stdlib-parsed upstream) escaped, never an exception
    return b"event: " + event_type.encode() + b"\ndata: " + data + b"\n\n"


class _ToolCall:
    __slots__ = ("block", "id", "name", "pending", "raw")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.pending: list[str] = []  # argument fragments not sent yet (see _tool_fragment)
        self.block: int | None = None  # the Anthropic block index once opened
        self.raw: bool | None = None  # the arguments are no JSON object (decided on their first non-blank)


class MessageStreamTranslator:
    def __init__(
        self,
        model: str,
        message_id: str,
        input_tokens_estimate: int,
        sign: Callable[[str], str],
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self._names = names or {}  # tool names sent upstream -> the client's (``upstream_tool_name``)
        self.message_id = message_id
        self.input_tokens_estimate = input_tokens_estimate
        self._sign = sign
        self._next_index = 0
        self._open: str | None = None  # "thinking" | "text" | "tool_use"
        self._open_tool: int | None = None
        self._thinking: list[str] = []
        self._tools: dict[int, _ToolCall] = {}
        self._slots = CallSlots()
        self._has_tool_use = False
        self._finish_reason: str | None = None
        self._saw_finish = False
        self._usage: dict[str, Any] | None = None
        self._broken: str | None = None
        self._chars = 0
        self._bytes = 0

    @property
    def saw_finish(self) -> bool:
        return self._saw_finish

    @property
    def finish_reason(self) -> str | None:
        return self._finish_reason

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._usage

    @property
    def output_chars(self) -> int:
        return self._chars

    @property
    def failed(self) -> bool:
        """Whether the stream ended (or is to end) in the failure event instead of a whole answer."""
        return self._broken is not None

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_tokens_estimate,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return encode_event("message_start", {"type": "message_start", "message": message})

    def ping(self) -> bytes:
        return PING

    def fail(self, error_type: str, message: str) -> bytes:
        return encode_event("error", {"type": "error", "error": {"type": error_type, "message": message}})

    def feed(self, chunk: dict[str, Any], data: str = "") -> bytes:
        """The events one upstream chunk completes (``data``, its raw text, is not needed here)."""
        out = bytearray()
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            # An Anthropic message has one choice: the first (n is never above 1 on this path).
            if not isinstance(choice, dict) or choice.get("index") not in (0, None):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                reasoning = delta.get("reasoning_content")
                if isinstance(reasoning, str) and reasoning:
                    self._thinking_delta(reasoning, out)
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._text_delta(content, out)
                tool_calls = delta.get("tool_calls")
                for fragment in tool_calls if isinstance(tool_calls, list) else []:
                    if isinstance(fragment, dict):
                        self._tool_fragment(fragment, out)
            finish_reason = choice.get("finish_reason")
            if isinstance(finish_reason, str) and finish_reason:
                self._finish_reason = finish_reason
                self._saw_finish = True
        return bytes(out)

    def finish(self) -> bytes:
        if self._broken is None and not self._saw_finish:
            self._broken = "The upstream stream ended before the response was complete."
        out = bytearray()
        for position, tool in sorted(self._tools.items()):
            if self._broken is not None:
                break
            if tool.block is not None:
                continue
            if tool.name is None:
                if tool.pending:
                    self._broken = "The upstream sent a tool call without a name."
                continue
            tool.id = tool.id or synthetic_tool_id(self.message_id, position)
            self._open_tool_block(position, tool, out)
        if self._broken is not None:
            return self.fail("api_error", self._broken)
        self._close(out)
        if self._usage is not None:
            usage = usage_to_anthropic(self._usage)
        else:
            usage = {
                "input_tokens": self.input_tokens_estimate,
                "output_tokens": estimate_tokens_from_counts(self._chars, self._bytes),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            }
        stop_reason = stop_reason_for(self._finish_reason, has_tool_use=self._has_tool_use)
        out += encode_event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage},
        )
        out += encode_event("message_stop", {"type": "message_stop"})
        return bytes(out)

    def _thinking_delta(self, text: str, out: bytearray) -> None:
        if self._open != "thinking":
            self._start_block({"type": "thinking", "thinking": "", "signature": ""}, out)
        self._thinking.append(text)
        self._delta({"type": "thinking_delta", "thinking": text}, text, out)

    def _text_delta(self, text: str, out: bytearray) -> None:
        if self._open != "text":
            self._start_block({"type": "text", "text": ""}, out)
        self._delta({"type": "text_delta", "text": text}, text, out)

    def _tool_fragment(self, fragment: dict[str, Any], out: bytearray) -> None:
        position = self._slots.slot(fragment)
        tool = self._tools.setdefault(position, _ToolCall())
        call_id = fragment.get("id")
        if tool.id is None and isinstance(call_id, str) and call_id:
            tool.id = call_id
        function = fragment.get("function")
        arguments = None
        if isinstance(function, dict):
            name = function.get("name")
            if tool.name is None and isinstance(name, str) and name:
                tool.name = name
            arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            if tool.block is not None and self._open_tool != position:
                self._broken = "The upstream interleaved the arguments of parallel tool calls."
            else:
                tool.pending.append(arguments)
                if tool.block is not None:
                    self._send_arguments(tool, out)
        if tool.block is None and tool.pending and tool.id is not None and tool.name is not None:
            self._open_tool_block(position, tool, out)  # with its first arguments (or at finish, if none come)

    def _open_tool_block(self, position: int, tool: _ToolCall, out: bytearray) -> None:
        name = self._names.get(tool.name or "", tool.name)
        tool.block = self._start_block({"type": "tool_use", "id": tool.id, "name": name, "input": {}}, out)
        self._open_tool = position
        self._has_tool_use = True
        self._send_arguments(tool, out)

    def _send_arguments(self, tool: _ToolCall, out: bytearray) -> None:
        """The open block's pending argument text, as far as it can go out now.

        Arguments that are a JSON object stream as they come, from their ``{`` on (the SDKs parse the
        text after every delta, and one of only blanks so far is an error to them). Any other arguments
        (broken JSON, an array, a bare string) are held whole and sent as the block closes, wrapped as
        the whole answer has them: ``{"_raw": "<arguments>"}`` (``app.dialects.anthropic.response``).
        """
        if tool.raw is None:
            text = "".join(tool.pending).lstrip()
            if not text:
                return  # blanks only, so far (and if nothing else comes, the input is {} as in the answer)
            tool.raw = not text.startswith("{")
            if not tool.raw:
                tool.pending = [text]  # from the brace on
        if not tool.raw and tool.pending:
            arguments = "".join(tool.pending)
            tool.pending = []
            self._delta({"type": "input_json_delta", "partial_json": arguments}, arguments, out)

    def _start_block(self, block: dict[str, Any], out: bytearray) -> int:
        self._close(out)
        index = self._next_index
        self._next_index += 1
        self._open = block["type"]
        out += encode_event(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
        )
        return index

    def _delta(self, delta: dict[str, Any], forwarded: str, out: bytearray) -> None:
        self._chars += len(forwarded)
        self._bytes += len(forwarded.encode("utf-8", "surrogatepass"))
        out += encode_event(
            "content_block_delta", {"type": "content_block_delta", "index": self._next_index - 1, "delta": delta}
        )

    def _close(self, out: bytearray) -> None:
        if self._open is None:
            return
        index = self._next_index - 1
        if self._open == "thinking":
            signature = self._sign("".join(self._thinking))
            self._thinking = []
            out += encode_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": signature},
                },
            )
        elif self._open == "tool_use" and self._open_tool is not None:
            tool = self._tools[self._open_tool]
            if tool.raw:  # held whole: see _send_arguments
                raw = dumps_compact({"_raw": "".join(tool.pending)}).decode()
                tool.pending = []
                self._delta({"type": "input_json_delta", "partial_json": raw}, raw, out)
        self._open = None
        self._open_tool = None
        out += encode_event("content_block_stop", {"type": "content_block_stop", "index": index})
