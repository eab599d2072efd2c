"""The Anthropic Messages dialect, translated to and from OpenAI Chat Completions (pure functions, no I/O).

request.py   Messages body -> Chat Completions body (validation; ``messages.py`` does the array)
response.py  chat.completion -> Message; usage and stop-reason mapping
stream.py    chat.completion.chunk stream -> Messages stream events
tokens.py    local input-token estimate for count_tokens
errors.py    AnthropicRequestError and the Anthropic error envelope
"""

from app.dialects.anthropic.errors import (
    AnthropicRequestError,
    anthropic_status_for_upstream,
    error_body,
    error_type_for_status,
)
from app.dialects.anthropic.request import messages_to_chat
from app.dialects.anthropic.response import chat_to_message, stop_reason_for, usage_to_anthropic
from app.dialects.anthropic.stream import MessageStreamTranslator
from app.dialects.anthropic.tokens import estimate_input_tokens

__all__ = [
    "AnthropicRequestError",
    "MessageStreamTranslator",
    "anthropic_status_for_upstream",
    "chat_to_message",
    "error_body",
    "error_type_for_status",
    "estimate_input_tokens",
    "messages_to_chat",
    "stop_reason_for",
    "usage_to_anthropic",
]
