"""``POST /v1/messages``: the Anthropic Messages API translated in, the same flow, translated out.

Keys, limits, reservations and usage rows are exactly those of ``/v1/chat/completions``: only the
shape of the request, the answer and the stream differs. Thinking blocks carry a gateway-made
signature: HMAC-SHA256 of the thinking text under a key derived from the master key (clients send it
back untouched; the gateway never needs to verify it, Ark does not check it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from app.chat_request import ChatRequest, model_of, parse_chat_request
from app.dialects import DROPPED_TOOLS_HEADER, Reply
from app.dialects.anthropic.errors import AnthropicRequestError
from app.dialects.anthropic.request import tool_names, translate
from app.dialects.anthropic.response import chat_to_message
from app.dialects.anthropic.stream import MessageStreamTranslator
from app.errors import Envelope, GatewayError, InvalidRequest, anthropic_error_type
from app.json import dumps_compact


class Signer:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"seedgate-thinking-signature:" + secret.encode()).digest()

    def __call__(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()


def message_id(reply: Reply) -> str:
    return "msg_" + reply.request_id.removeprefix("req_")


class MessagesStream(MessageStreamTranslator):
    """The translator as the relay's ``StreamWriter``: its methods are the translator's own, no extra call per event."""

    chunk = MessageStreamTranslator.feed
    done = MessageStreamTranslator.finish
    heartbeat = MessageStreamTranslator.ping

    def error(self, error: GatewayError) -> bytes:
        return self.fail(anthropic_error_type(error.status), error.message)


class AnthropicMessages:
    endpoint = "messages"
    envelope: Envelope = "anthropic"

    def __init__(self, signer: Signer) -> None:
        self._sign = signer

    def model_name(self, body: Any) -> str:
        return model_of(body)

    def parse(self, body: Any) -> ChatRequest:
        try:
            chat, dropped = translate(body)
        except AnthropicRequestError as exc:
            raise InvalidRequest(exc.message, param=exc.param, code=exc.code) from None
        headers = {DROPPED_TOOLS_HEADER: ",".join(dropped)} if dropped else None
        return parse_chat_request(chat, response_headers=headers, context=tool_names(body) or None)

    def render(self, answer: dict[str, Any], raw: bytes, reply: Reply) -> bytes:
        names = reply.context or {}  # the client's names of tools that went upstream under another
        message = chat_to_message(answer, model=reply.model, message_id=message_id(reply), sign=self._sign, names=names)
        return dumps_compact(message)  # an upstream's lone surrogate is written escaped, never a 500

    def stream(self, request: ChatRequest, reply: Reply) -> MessagesStream:
        names = request.context or {}
        return MessagesStream(reply.model, message_id(reply), reply.prompt_tokens, self._sign, names)
