"""Scripts: plain data saying how the fake upstream answers one chat request.

Every field has a default, so `Script()` is a short, successful answer. `Script.from_dict` builds one
from JSON (the control endpoints, the CLI) and rejects unknown keys with `ValueError`; the constructor
validates types and ranges, so a typo in a test fails loudly instead of silently doing nothing.

Rules this module owns:

- `content=None` means "the server's default content" (`DEFAULT_CONTENT`, or the echo text in demo mode).
  `content_chunks` / `reasoning_chunks` / `arguments_chunks` give the exact stream split; when the
  whole text is not given it is their concatenation, and when both are given they must agree.
- `finish_reason=None` means `"tool_calls"` when the script has tool calls, else `"stop"`.
- Default usage (when `usage` is absent) is deterministic:

      prompt_tokens     = max(1, total characters of all message texts // 4)
      completion_tokens = max(1, (len(content) + len(reasoning) + sum of len(tool arguments)) // 4)
      total_tokens      = prompt_tokens + completion_tokens
      prompt_tokens_details.cached_tokens        = 0
      completion_tokens_details.reasoning_tokens = len(reasoning) // 4

  "Message texts" are the string `content` and the `text` of `type: "text"` parts of every message,
  whatever its role. A partial `usage` dict keeps every value it gives (explicit zeros included) and
  fills the rest from the formula; `total_tokens`, when absent, is the sum of the final prompt and
  completion figures. `usage="omit"` sends no usage at all.
- Stream fault counters (`reset_after_events`, `malformed_after_events`, `comment_every`) count `data:`
  events as written, `data: [DONE]` included; comments and the broken event do not count.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CONTENT = "Hello from the fake upstream."
LINE_ENDINGS = ("\n", "\r\n", "\r")
# Framing belongs to the server: letting a script set these would make responses unparseable by accident.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_WORDS = re.compile(r"\S+\s*|\s+")
_ARGUMENT_PIECE = 16
_DETAIL_KEYS = ("prompt_tokens_details", "completion_tokens_details")


def default_error_body() -> dict[str, Any]:
    return {"error": {"message": "fake upstream error", "type": "server_error", "param": None, "code": "fake_error"}}


def split_words(text: str) -> list[str]:
    """Word-sized stream pieces whose concatenation is exactly `text`."""
    return _WORDS.findall(text)


def _joined(name: str, whole: str | None, chunks: list[str] | None) -> str | None:
    if chunks is None:
        return whole
    if not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks):
        raise ValueError(f"{name}_chunks must be a list of strings")
    joined = "".join(chunks)
    if whole and whole != joined:
        raise ValueError(f"{name}_chunks do not add up to {name}")
    return joined


def _strict_kwargs(cls: type[Any], data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return dict(data)


def _check(name: str, value: Any, *types: type) -> None:
    # bool is an int subclass; a count of `True` is always a mistake.
    if isinstance(value, bool) and bool not in types:
        raise ValueError(f"{name} must be {' or '.join(t.__name__ for t in types)}, got bool")
    if not isinstance(value, types):
        raise ValueError(f"{name} must be {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}")


def _check_count(name: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    _check(name, value, int)
    if value < 0:
        raise ValueError(f"{name} must be >= 0")


@dataclass
class ToolCall:
    """One function call the fake model makes; each call gets its own stream `index`."""

    id: str
    name: str
    arguments: str = ""
    arguments_chunks: list[str] | None = None

    def __post_init__(self) -> None:
        _check("tool_calls[].id", self.id, str)
        _check("tool_calls[].name", self.name, str)
        _check("tool_calls[].arguments", self.arguments, str)
        self.arguments = _joined("arguments", self.arguments, self.arguments_chunks) or ""

    @classmethod
    def from_dict(cls, data: Any) -> ToolCall:
        kwargs = _strict_kwargs(cls, data)
        missing = {"id", "name"} - set(kwargs)
        if missing:
            raise ValueError(f"tool call is missing {', '.join(sorted(missing))}")
        return cls(**kwargs)

    def fragments(self) -> list[str]:
        """Argument fragments sent after the opening fragment (which carries `arguments: ""`)."""
        if self.arguments_chunks is not None:
            return list(self.arguments_chunks)
        return [self.arguments[i : i + _ARGUMENT_PIECE] for i in range(0, len(self.arguments), _ARGUMENT_PIECE)]


@dataclass
class Script:
    """How to answer one chat request: the answer, its usage, and the faults to inject."""

    status: int = 200
    error_body: dict[str, Any] = field(default_factory=default_error_body)
    headers: dict[str, str] = field(default_factory=dict)
    delay_before_headers: float = 0.0
    content: str | None = None
    content_chunks: list[str] | None = None
    reasoning: str = ""
    reasoning_chunks: list[str] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, Any] | str | None = None
    event_delay: float = 0.0
    comment_every: int = 0
    reset_after_events: int | None = None
    malformed_after_events: int | None = None
    line_ending: str = "\n"
    byte_by_byte: bool = False
    multiline_data: bool = False  # each JSON event indented over several `data:` lines (legal SSE)
    no_done: bool = False
    stream_error: dict[str, Any] | None = None
    hang: bool = False
    body_padding_bytes: int = 0
    close_connection: bool = False

    def __post_init__(self) -> None:
        _check("status", self.status, int)
        if not 100 <= self.status <= 599:
            raise ValueError("status must be within 100..599")
        _check("error_body", self.error_body, dict)
        _check("headers", self.headers, dict)
        for key, value in self.headers.items():
            if not isinstance(key, str) or not isinstance(value, str) or any(c in key + value for c in "\r\n"):
                raise ValueError("headers must map strings to single-line strings")
            if key.lower() in _RESERVED_HEADERS:
                raise ValueError(f"headers: {key!r} is set by the server")
        for name in ("delay_before_headers", "event_delay"):
            _check(name, getattr(self, name), int, float)
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.content is not None:
            _check("content", self.content, str)
        _check("reasoning", self.reasoning, str)
        self.content = _joined("content", self.content, self.content_chunks)
        self.reasoning = _joined("reasoning", self.reasoning, self.reasoning_chunks) or ""
        _check("tool_calls", self.tool_calls, list)
        if not all(isinstance(call, ToolCall) for call in self.tool_calls):
            raise ValueError("tool_calls must hold ToolCall objects (use Script.from_dict for JSON)")
        for name in ("finish_reason", "model"):
            if getattr(self, name) is not None:
                _check(name, getattr(self, name), str)
        if self.usage is not None and self.usage != "omit":
            _check("usage", self.usage, dict)
        for name in ("comment_every", "body_padding_bytes"):
            _check_count(name, getattr(self, name))
        for name in ("reset_after_events", "malformed_after_events"):
            _check_count(name, getattr(self, name), optional=True)
        if self.line_ending not in LINE_ENDINGS:
            raise ValueError("line_ending must be one of '\\n', '\\r\\n', '\\r'")
        for name in ("byte_by_byte", "multiline_data", "no_done", "hang", "close_connection"):
            _check(name, getattr(self, name), bool)
        if self.stream_error is not None:
            _check("stream_error", self.stream_error, dict)

    @classmethod
    def from_dict(cls, data: Any) -> Script:
        kwargs = _strict_kwargs(cls, data)
        calls = kwargs.get("tool_calls", [])
        if not isinstance(calls, list):
            raise ValueError("tool_calls must be a list")
        kwargs["tool_calls"] = [ToolCall.from_dict(call) for call in calls]
        return cls(**kwargs)

    @classmethod
    def coerce(cls, script: Script | dict[str, Any]) -> Script:
        return script if isinstance(script, Script) else cls.from_dict(script)

    def resolved_finish_reason(self) -> str:
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    def content_pieces(self, content: str) -> list[str]:
        return list(self.content_chunks) if self.content_chunks is not None else split_words(content)

    def reasoning_pieces(self) -> list[str]:
        return list(self.reasoning_chunks) if self.reasoning_chunks is not None else split_words(self.reasoning)

    def usage_for(self, prompt_chars: int, content: str) -> dict[str, Any] | None:
        """The usage object to send, or None for `usage="omit"` (formula in the module docstring)."""
        if self.usage == "omit":
            return None
        given: dict[str, Any] = self.usage if isinstance(self.usage, dict) else {}
        arguments = sum(len(call.arguments) for call in self.tool_calls)
        usage: dict[str, Any] = {
            "prompt_tokens": max(1, prompt_chars // 4),
            "completion_tokens": max(1, (len(content) + len(self.reasoning) + arguments) // 4),
        }
        usage.update({k: v for k, v in given.items() if k not in _DETAIL_KEYS})
        if "total_tokens" not in given:
            prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
            both_ints = isinstance(prompt, int) and isinstance(completion, int)
            usage["total_tokens"] = prompt + completion if both_ints else None
        usage["prompt_tokens_details"] = _details(given, "prompt_tokens_details", {"cached_tokens": 0})
        reasoning = {"reasoning_tokens": len(self.reasoning) // 4}
        usage["completion_tokens_details"] = _details(given, "completion_tokens_details", reasoning)
        return usage


def _details(given: dict[str, Any], key: str, default: dict[str, Any]) -> Any:
    # A dict is merged over the defaults; anything else (null included) is sent exactly as given.
    if key not in given:
        return default
    value = given[key]
    return {**default, **value} if isinstance(value, dict) else value
