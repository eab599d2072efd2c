"""Which tool call a streamed ``tool_calls`` fragment belongs to (every translating dialect).

OpenAI and Ark number a chunk's tool calls with ``index`` and send the ``id`` with a call's first
fragment only. Other OpenAI-compatible upstreams do not all: some give every parallel call
``index: 0`` with its own id (Ollama, several proxies), some send no ``index`` at all (Gemini's
compatible API), some repeat the id on every fragment. ``CallSlots`` gives each call its own slot,
numbered 0, 1, ... in the order the calls first appear:

- a fragment with an ``index`` continues the call last seen at that index -- unless it brings an id
  other than that call's, which starts a new call;
- a fragment without an ``index`` continues the call with its id, starts a new call when it brings an
  id not seen yet, and without an id continues the call of the last fragment.
"""

from __future__ import annotations

from typing import Any


class CallSlots:
    __slots__ = ("_at_index", "_count", "_ids", "_last")

    def __init__(self) -> None:
        self._at_index: dict[int, int] = {}  # upstream index -> the slot of the call last seen there
        self._ids: dict[int, str] = {}  # slot -> the call's id, once one came
        self._last: int | None = None  # the slot of the last fragment
        self._count = 0  # slots given out

    def slot(self, fragment: dict[str, Any]) -> int:
        """The slot of the call ``fragment`` belongs to (a new one if it starts a call)."""
        call_id = fragment.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = None
        index = fragment.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            slot = self._at_index.get(index)
            if slot is None or (call_id is not None and self._ids.get(slot, call_id) != call_id):
                slot = self._at_index[index] = self._new()
        elif call_id is not None:
            slot = next((known for known, seen in self._ids.items() if seen == call_id), None)
            if slot is None:
                slot = self._new()
        else:
            slot = self._new() if self._last is None else self._last
        if call_id is not None:
            self._ids.setdefault(slot, call_id)
        self._last = slot
        return slot

    def _new(self) -> int:
        self._count += 1
        return self._count - 1
