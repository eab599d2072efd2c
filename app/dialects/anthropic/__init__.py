"""The Anthropic Messages dialect, translated to and from OpenAI Chat Completions (pure functions, no I/O).

request.py   Messages body -> Chat Completions body (validation; ``messages.py`` does the array)
response.py  chat.completion -> Message; usage and stop-reason mapping
stream.py    chat.completion.chunk stream -> Messages stream events
tokens.py    local input-token estimate for count_tokens
errors.py    AnthropicRequestError
dialect.py   the Messages dialect of the pipeline (uses the above)
"""

from app.dialects.anthropic.errors import AnthropicRequestError
from app.dialects.anthropic.request import messages_to_chat
from app.dialects.anthropic.response import chat_to_message, stop_reason_for, usage_to_anthropic
from app.dialects.anthropic.stream import MessageStreamTranslator
from app.dialects.anthropic.tokens import estimate_input_tokens

__all__ = [
    "AnthropicRequestError",
    "MessageStreamTranslator",
    "chat_to_message",
    "estimate_input_tokens",
    "messages_to_chat",
    "stop_reason_for",
    "usage_to_anthropic",
]
