"""Incremental decoder for an upstream ``text/event-stream`` body.

Rules this module owns (WHATWG "server-sent events" parsing, trimmed to what a relay needs):

- Lines end in ``\\n``, ``\\r\\n`` or ``\\r``. A ``\\r`` that ends one network chunk followed by a ``\\n``
  that starts the next is ONE line ending.
- A blank line dispatches the pending event. An event without any ``data:`` line is not dispatched.
- ``data:`` lines of one event are joined with ``\\n``; one space after the colon is dropped if present.
- ``event:`` names the event (an empty name means "no name", ``None``); ``id:``, ``retry:``, unknown
  fields and comment lines (``:`` prefix) are ignored. A UTF-8 BOM at the start of the stream is dropped.
- Bytes are split into lines before decoding: ``\\r`` and ``\\n`` never occur inside a multi-byte UTF-8
  sequence, so characters split across chunks decode correctly. Invalid UTF-8 becomes U+FFFD, never an
  exception.
- End of stream (``flush``) terminates the last line and dispatches the pending event if it has data:
  some upstreams omit the final blank line after ``data: [DONE]``. Callers decide completeness from the
  payload (a ``finish_reason``, ``[DONE]``), not from framing.
- Memory is bounded: when one event (its data lines plus the unterminated line being read) exceeds
  ``max_event_bytes``, ``feed`` raises ``SSEError``. The decoder must not be used after that.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class SSEError(Exception):
    """The event stream cannot be decoded safely (an event exceeded the size limit)."""


class SSEEvent(NamedTuple):
    event: str | None
    data: str


class SSEDecoder:
    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes <= 0:
            raise ValueError("max_event_bytes must be positive")
        self.max_event_bytes = max_event_bytes
        # Invariant: _partial never contains b"\r" or b"\n"; it is the unterminated tail of the stream.
        self._partial = bytearray()
        self._skip_lf = False  # the previous chunk ended in "\r"; a leading "\n" belongs to it
        self._at_start = True  # the BOM may only appear before the first line
        self._event: str | None = None
        self._data: list[str] = []
        self._data_bytes = 0

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode one network chunk; return the events it completed (often none)."""
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
                if not data:
                    return []
        if b"\n" not in data and b"\r" not in data:
            # Hot path for tiny chunks in the middle of a long line: append, no copying of the tail.
            self._partial += data
            self._check_size()
            return []
        text = bytes(self._partial) + data if self._partial else bytes(data)
        self._partial.clear()
        if text.endswith(b"\r"):
            self._skip_lf = True
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = text.split(b"\n")
        # The last piece has no terminator yet (empty when the text ended in a line ending).
        tail = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            self._line(line, events)
        self._partial += tail
        self._check_size()
        return events

    def flush(self) -> list[SSEEvent]:
        """End of stream: terminate the last line and dispatch the pending event if it has data."""
        events: list[SSEEvent] = []
        if self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            self._line(line, events)
        self._line(b"", events)
        self._skip_lf = False
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if self._at_start:
            self._at_start = False
            if line.startswith(_BOM):
                line = line[3:]
        if not line:
            if self._data:
                events.append(SSEEvent(self._event, "\n".join(self._data)))
                self._data = []
                self._data_bytes = 0
            self._event = None
            return
        if line[0] == 0x3A:  # ":" starts a comment
            return
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value.decode("utf-8", "replace"))
            self._data_bytes += len(value) + 1
            self._check_size()
        elif field == b"event":
            self._event = value.decode("utf-8", "replace") or None
        # "id", "retry" and unknown fields carry nothing the relay needs.

    def _check_size(self) -> None:
        if self._data_bytes + len(self._partial) > self.max_event_bytes:
            raise SSEError(f"an event in the upstream stream exceeded {self.max_event_bytes} bytes")
