"""Local token estimates (``/v1/messages/count_tokens`` and stream fallbacks); no tokenizer involved.

Formula, for a text of ``L`` characters whose UTF-8 encoding is ``B`` bytes:

    non_ascii = ceil((B - L) / 2)        # every non-ASCII character is assumed 3-byte (CJK)
    ascii     = L - non_ascii
    tokens    = ceil(ascii / 4) + non_ascii     # ~4 ASCII chars per token, 1 token per CJK character

The encoded length is computed in C, so no per-character Python loop runs. For a request body:

    estimate = 3                                   # priming of the reply
             + tokens(all counted text)
             + 4 per message, 8 per tool definition
             + 1600 per image (anywhere, tool results included)

Counted text: the system prompt, text and thinking blocks, tool_use name + JSON of its input, tool_result
text, text documents, and each tool's name + description + JSON of its input schema. The estimate grows
with every one of them; it is a guess, not what the upstream will bill.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

IMAGE_TOKENS = 1600
MESSAGE_TOKENS = 4
TOOL_TOKENS = 8
REPLY_PRIMING_TOKENS = 3


def estimate_text_tokens(text: str) -> int:
    return estimate_tokens_from_counts(len(text), len(text.encode("utf-8", "surrogatepass")))


def estimate_tokens_from_counts(chars: int, utf8_bytes: int) -> int:
    """The formula above, for callers that keep running character and byte counts (stream translation)."""
    non_ascii = min(chars, -(-(utf8_bytes - chars) // 2))
    ascii_chars = chars - non_ascii
    return -(-ascii_chars // 4) + non_ascii


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Estimate the input tokens of an Anthropic Messages body (``max_tokens`` not needed)."""
    counter = _Counter()
    counter.content(body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            counter.extra += MESSAGE_TOKENS
            if isinstance(message, dict):
                counter.content(message.get("content"))
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict):
                counter.extra += TOOL_TOKENS
                for key in ("name", "description"):
                    if isinstance(tool.get(key), str):
                        counter.texts.append(tool[key])
                if "input_schema" in tool:
                    counter.texts.append(_json(tool["input_schema"]))
    return REPLY_PRIMING_TOKENS + counter.extra + estimate_text_tokens("".join(counter.texts))


class _Counter:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.extra = 0

    def content(self, content: Any) -> None:
        """Count a string or a list of content blocks (the shape of system, content and tool_result)."""
        if isinstance(content, str):
            self.texts.append(content)
        elif isinstance(content, list):
            for block in content:
                if isinstance(block, dict):
                    self.block(block)

    def block(self, block: dict[str, Any]) -> None:
        kind = block.get("type")
        if kind == "image":
            self.extra += IMAGE_TOKENS
        elif kind == "tool_use":
            if isinstance(block.get("name"), str):
                self.texts.append(block["name"])
            self.texts.append(_json(block.get("input", {})))
        elif kind == "tool_result":
            self.content(block.get("content"))
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict):
                data = source.get("data") if source.get("type") == "text" else source.get("content")
                self.content(data)
        else:
            for key in ("text", "thinking"):
                if isinstance(block.get(key), str):
                    self.texts.append(block[key])


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, default=str)
