"""``chat.completion.chunk`` stream -> Responses stream events (docs/protocol.md 6.3).

Every event is ``event: <type>`` + ``data: {"type", "sequence_number", ...}``, numbered from 0. The
sequence: ``response.created``, ``response.in_progress``; then per output item, in the order the
upstream produced them:

- reasoning: ``output_item.added``, ``reasoning_summary_part.added``, ``reasoning_summary_text.delta``...,
  ``reasoning_summary_text.done``, ``reasoning_summary_part.done``, ``output_item.done``;
- text: ``output_item.added``, ``content_part.added``, ``output_text.delta``..., ``output_text.done``,
  ``content_part.done``, ``output_item.done``;
- a tool call (told apart by ``app.dialects.tool_calls``): ``output_item.added`` (once its name is known
  and its first arguments came; earlier fragments are held), ``function_call_arguments.delta``...,
  ``function_call_arguments.done``, ``output_item.done`` (a call without arguments gets ``{}``);

and last ``response.completed`` (or ``response.incomplete``) with the full response and usage. A new
kind of output closes the open item. A stream cut before a ``finish_reason``, a tool call without a
name, arguments of parallel calls interleaved after their item closed, or an upstream fault end in
``response.failed`` (the response with ``status: failed`` and ``error``). Idle periods get
``: keepalive`` comments. No ``[DONE]``.

Events are written as bytes around already serialised members (``app.dialects.responses.response``):
each item is serialised once, for its ``output_item.done`` and again inside the final response. The
usual chunk -- one more piece of the open text -- is held back and the pieces of one write are joined
into a single delta event (``flush``, called by the relay), framed from precomputed bytes
(``app.dialects.responses.events``).
"""

from __future__ import annotations

from typing import Any

from app.dialects.responses.events import (
    ARGUMENTS_DELTA,
    ARGUMENTS_DONE,
    COMPLETED,
    FAILED,
    INCOMPLETE,
    ITEM_ADDED,
    ITEM_DONE,
    MESSAGE,
    MESSAGE_DONE,
    REASONING,
    STARTED,
    SUMMARY_PART,
    TextKind,
)
from app.dialects.responses.response import (
    Context,
    call_json,
    fill_response,
    finished_arguments,
    item_id,
    output_text_json,
    reasoning_json,
    response_id,
    response_template,
    status_for,
    usage_json,
)
from app.dialects.responses.seal import Sealer
from app.dialects.tool_calls import CallSlots
from app.json import dumps_compact

KEEPALIVE = b": keepalive\n\n"
_NOT_FAST = (KeyError, TypeError, ValueError, IndexError)  # a chunk of another shape than one text piece


class _Call:
    __slots__ = ("arguments", "call_id", "index", "name", "pending")

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []
        self.pending = True  # its output item is not open yet
        self.index: int | None = None  # output_index once opened


class ResponseStreamTranslator:
    __slots__ = (
        "_broken",
        "_calls",
        "_common",
        "_fast",
        "_finish",
        "_framing",
        "_held",
        "_item",
        "_open",
        "_open_call",
        "_other",
        "_output",
        "_request_id",
        "_sealer",
        "_seq",
        "_slots",
        "_template",
        "_text",
        "_text_json",
        "_usage",
        "context",
    )

    def __init__(self, context: Context, sealer: Sealer, request_id: str, model: str) -> None:
        self.context = context
        self._sealer = sealer
        self._request_id = request_id
        self._template = response_template(context, request_id=request_id, model=model)  # see fill_response
        self._seq = 0
        self._output: list[bytes] = []  # finished items, serialised
        self._open: TextKind | str | None = None  # the open item: a text kind, or "call"
        self._item = b""  # the open text item's id
        self._common = b""  # and the members every event of it starts with
        self._text: list[str] = []  # the open text item's pieces written so far
        self._text_json = b""  # the last one's JSON
        self._calls: dict[int, _Call] = {}
        self._slots: CallSlots | None = None  # which call a fragment continues (made with the first call)
        self._open_call: int | None = None
        self._finish: str | None = None
        self._usage: Any = None
        self._broken: str | None = None
        self._framing: tuple[bytes, bytes, bytes] = (b"", b"", b"")  # the open text item's delta events
        self._fast: str | None = None  # the delta field that continues the open text item, if one is open
        self._other = ""  # and the other text field, which a chunk continuing it must not have
        self._held: list[str] = []  # text pieces of the open item not written yet (see flush)

    # -- events ------------------------------------------------------------------------------------

    def _event(self, head: bytes, members: bytes) -> bytes:
        """An event: its ``head`` (``head(kind)``), sequence number, then ``members`` (serialised JSON members)."""
        seq = self._seq
        self._seq = seq + 1
        return b"%b%d,%b}\n\n" % (head, seq, members)

    def _response_event(self, head: bytes, response: bytes) -> bytes:
        """An event whose one member is the ``response`` object (written into the event once, not copied twice)."""
        seq = self._seq
        self._seq = seq + 1
        return b'%b%d,"response":%b}\n\n' % (head, seq, response)

    @property
    def failed(self) -> bool:
        """Whether the stream ended (or is to end) in the failure event instead of a whole answer."""
        return self._broken is not None

    def start(self) -> bytes:
        response = fill_response(self._template, "in_progress")
        seq = self._seq
        self._seq = seq + 2
        return STARTED % (seq, response, seq + 1, response)

    def heartbeat(self) -> bytes:
        return KEEPALIVE

    def fail(self, code: str, message: str) -> bytes:
        out: list[bytes] = []
        self._close(out)  # held text first; what was delivered stays a well-formed item of the failed response
        error = {"code": code, "message": message}
        response = fill_response(self._template, "failed", self._output, error=error)
        out.append(self._response_event(FAILED, response))
        return b"".join(out)

    # -- upstream chunks ---------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any], data: str = "") -> bytes:
        """The events one upstream chunk completes (``data``, its raw text, is not needed here).

        The usual chunk -- one choice (index 0, no finish_reason) whose delta continues the open text item,
        ``usage`` null -- is held back and written by ``flush`` with the pieces that follow it in the same
        write (one delta event for a burst). Anything else, a chunk leaving out one of those members
        included, goes through ``_feed_choice``: the same events, its text held the same way (what is held
        goes out before anything that closes its item).
        """
        key = self._fast
        if key is not None:
            try:  # subscripts: a chunk of a stream that includes usage has all of these; one without is not "usual"
                if chunk["usage"] is None:
                    (choice,) = chunk["choices"]
                    if choice["finish_reason"] is None and choice["index"] == 0:
                        delta = choice["delta"]
                        text = delta[key]
                        if (
                            type(text) is str
                            and text
                            and (len(delta) == 1 or not (delta.get(self._other) or delta.get("tool_calls")))
                        ):
                            self._held.append(text)  # written by flush(), joined with the pieces that follow
                            return b""
            except _NOT_FAST:
                pass  # another shape: the general path below
        usage = chunk.get("usage")
        if type(usage) is dict:
            self._usage = usage
        choices = chunk.get("choices")
        out: list[bytes] = []  # what is held stays held: it goes out before anything that closes its item
        for choice in choices if type(choices) is list else ():
            if type(choice) is dict and choice.get("index") in (0, None):
                self._feed_choice(choice, out)
        return b"".join(out)

    def _feed_choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if type(delta) is dict and self._broken is None:
            reasoning = delta.get("reasoning_content")
            if type(reasoning) is str and reasoning:
                self._delta(REASONING, reasoning, out)
            content = delta.get("content")
            if type(content) is str and content:
                self._delta(MESSAGE, content, out)
            calls = delta.get("tool_calls")
            if calls and type(calls) is list:
                for fragment in calls:
                    if type(fragment) is dict:
                        self._call_fragment(fragment, out)
        finish = choice.get("finish_reason")
        if finish and type(finish) is str:
            self._finish = finish

    def flush(self) -> bytes:
        """The text pieces held back since the last write, as one delta event of the open item."""
        held = self._held
        if not held:
            return b""
        text = held[0] if len(held) == 1 else "".join(held)
        held.clear()
        self._text.append(text)
        self._text_json = text_json = dumps_compact(text)
        seq = self._seq
        self._seq = seq + 1
        head, middle, tail = self._framing  # the open item's delta event around its sequence number and text
        return b"%b%d%b%b%b" % (head, seq, middle, text_json, tail)

    def finish(self) -> bytes:
        out: list[bytes] = []  # what is held goes out when its item closes, below or in fail()
        if self._broken is None and self._finish is None:
            self._broken = "The upstream stream ended before the response was complete."
        for position in sorted(self._calls) if self._calls else ():
            if self._broken is not None:
                break
            call = self._calls[position]
            if call.pending and call.name is None:
                self._broken = "The upstream sent a tool call without a name."
            elif call.pending:
                self._open_item_for(position, call, out)
        if self._broken is not None:
            out.append(self.fail("server_error", self._broken))
            return b"".join(out)
        self._close(out)
        status, incomplete = status_for(self._finish)
        response = fill_response(self._template, status, self._output, usage_json(self._usage), incomplete)
        self.context.final = response
        if self.context.store:
            self.context.final_id = response_id(self._request_id)  # the stored record's id
        out.append(self._response_event(COMPLETED if status == "completed" else INCOMPLETE, response))
        return b"".join(out)

    # -- items -------------------------------------------------------------------------------------

    def _delta(self, kind: TextKind, text: str, out: list[bytes]) -> None:
        if self._open is not kind:
            if self._open is not None:
                self._close(out)
            self._open_text_item(kind, out)
        self._held.append(text)  # written by flush(), at the end of this write at the latest

    def _open_text_item(self, kind: TextKind, out: list[bytes]) -> None:
        index = len(self._output)
        self._open, self._fast, self._other = kind, kind.field, kind.other
        self._item = item = item_id(kind.id_prefix, self._request_id, index or None).encode()
        self._common = common = kind.common % (item, index)
        seq = self._seq
        self._seq = seq + 2
        out.append(kind.opened % (seq, index, item, seq + 1, common))
        head, tail = kind.delta
        self._framing = (head, b"," + common + b',"delta":', tail)

    def _call_fragment(self, fragment: dict[str, Any], out: list[bytes]) -> None:
        if self._slots is None:
            self._slots = CallSlots()
        position = self._slots.slot(fragment)
        call = self._calls.setdefault(position, _Call())
        if call.call_id is None and isinstance(fragment.get("id"), str) and fragment["id"]:
            call.call_id = fragment["id"]
        function: dict[str, Any] = fragment["function"] if isinstance(fragment.get("function"), dict) else {}
        if call.name is None and isinstance(function.get("name"), str) and function["name"]:
            call.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            if not call.pending and self._open_call != position:
                self._broken = "The upstream interleaved the arguments of parallel tool calls."
                self._fast = None  # nothing more is delivered
                return
            call.arguments.append(arguments)
            if not call.pending:
                out.append(self._arguments_delta(position, call.index or 0, arguments))
        if call.pending and call.name is not None and call.arguments:
            self._open_item_for(position, call, out)  # with its first arguments (or at finish, if none come)

    def _fid(self, position: int) -> str:
        return item_id("fc", self._request_id, position)

    def _arguments_delta(self, position: int, index: int, arguments: str) -> bytes:
        members = b'"item_id":"%b","output_index":%d,"delta":%b' % (
            self._fid(position).encode(),
            index,
            dumps_compact(arguments),
        )
        return self._event(ARGUMENTS_DELTA, members)

    def _open_item_for(self, position: int, call: _Call, out: list[bytes]) -> None:
        self._close(out)
        self._open, self._open_call = "call", position
        call.pending, call.index = False, len(self._output)
        call.call_id = call.call_id or item_id("call", self._request_id, position)
        item, _ = call_json(self._fid(position), call.call_id, call.name or "", "", self.context, status="in_progress")
        out.append(self._event(ITEM_ADDED, b'"output_index":%d,"item":%b' % (call.index, item)))
        if call.arguments:
            out.append(self._arguments_delta(position, call.index, "".join(call.arguments)))

    def _close(self, out: list[bytes]) -> None:
        kind, index = self._open, len(self._output)
        if kind is None:
            return
        if self._held:
            out.append(self.flush())
        self._open = self._fast = None
        if isinstance(kind, TextKind):
            pieces = self._text
            if len(pieces) == 1:  # written in one delta (the usual burst): its JSON is at hand
                text, text_json = pieces[0], self._text_json
            else:
                text = "".join(pieces)
                text_json = dumps_compact(text)
            self._text = []
            if kind is REASONING:
                part = SUMMARY_PART % text_json
                item = reasoning_json(self._item.decode(), text, self.context, self._sealer)
            else:
                part = output_text_json(text_json)
                item = MESSAGE_DONE % (self._item, part)
            common, seq = self._common, self._seq
            self._seq = seq + 3
            out.append(kind.closed % (seq, common, text_json, seq + 1, common, part, seq + 2, index, item))
        else:
            position, self._open_call = self._open_call or 0, None
            call = self._calls[position]
            sent = "".join(call.arguments)
            arguments = finished_arguments(sent)
            if arguments != sent:  # the "{}" of a call without arguments: its deltas add up to its arguments
                out.append(self._arguments_delta(position, index, arguments[len(sent) :]))
            fid = self._fid(position)
            item, name = call_json(fid, call.call_id or "", call.name or "", arguments, self.context)
            members = b'"item_id":"%b","output_index":%d,"name":%b,"arguments":%b'
            out.append(
                self._event(
                    ARGUMENTS_DONE,
                    members % (fid.encode(), index, dumps_compact(name), dumps_compact(arguments)),
                )
            )
            out.append(self._event(ITEM_DONE, b'"output_index":%d,"item":%b' % (index, item)))
        self._output.append(item)
