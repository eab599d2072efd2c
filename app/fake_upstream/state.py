"""The fake upstream's mutable state: the script queue, named scripts and recorded requests.

Rules this module owns:

- Selection: a marker name picks the named script (not consumed; an unknown name is a `LookupError`);
  otherwise the head of the request model's own FIFO queue is popped (`enqueue_for_model`: concurrent
  requests of a client's main loop and its subagents each get their own answers); otherwise the head
  of the shared FIFO queue; otherwise the caller's default applies (None).
- Only the most recent `MAX_RECORDED` requests are kept, so demo mode and long benchmarks stay bounded.
- Every method takes one lock, so tests in another thread (`FakeUpstreamThread`) may call them while
  the server's event loop uses them. No method awaits while holding it.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, TypedDict

from app.fake_upstream.script import Script

MAX_RECORDED = 10_000


class RecordedRequest(TypedDict):
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


class State:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Script] = deque()
        self._named: dict[str, Script] = {}
        self._by_model: dict[str, deque[Script]] = {}
        self._requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED)

    def enqueue(self, scripts: list[Script]) -> int:
        """Append scripts to the queue; returns the queue length."""
        with self._lock:
            self._queue.extend(scripts)
            return len(self._queue)

    def enqueue_for_model(self, model: str, scripts: list[Script]) -> int:
        """Append scripts to the queue of requests for ``model`` (the upstream model name); returns its length."""
        with self._lock:
            queue = self._by_model.setdefault(model, deque())
            queue.extend(scripts)
            return len(queue)

    def set_named(self, name: str, script: Script) -> None:
        with self._lock:
            self._named[name] = script

    def select(self, marker: str | None, model: str | None = None) -> Script | None:
        with self._lock:
            if marker is not None:
                script = self._named.get(marker)
                if script is None:
                    raise LookupError(f"fake upstream has no named script {marker!r} (PUT /_control/named/{marker})")
                return script
            own = self._by_model.get(model) if model is not None else None
            if own:
                return own.popleft()
            return self._queue.popleft() if self._queue else None

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._by_model.clear()
            self._named.clear()
            self._requests.clear()
