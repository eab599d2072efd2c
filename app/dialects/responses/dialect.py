"""``POST /v1/responses``: the Responses API translated in, the chat request flow, translated out.

Keys, limits, holds and usage rows are those of ``/v1/chat/completions`` (endpoint ``responses``).
Tools the upstream cannot run are left out and named in ``x-seedgate-dropped-tools``. With ``store``
(OpenAI's default: true) the finished response is kept (``app.stored_responses``) after the request
settled; ``previous_response_id`` prepends the stored conversation (its input and output items) to
``input`` before parsing. ``store: false`` keeps nothing. Reasoning sealed into ``encrypted_content``
is opened again on the next turn; what this gateway did not seal falls back to the summary text.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.chat_request import ChatRequest, model_of
from app.dialects import Reply
from app.dialects.responses.errors import invalid
from app.dialects.responses.request import parse_responses
from app.dialects.responses.response import Context, chat_to_response, response_id
from app.dialects.responses.seal import Sealer
from app.dialects.responses.stream import ResponseStreamTranslator
from app.errors import Envelope, GatewayError
from app.json import dumps_compact
from app.stored_responses import ResponseStore

log = logging.getLogger("seedgate.responses")


class ResponsesStream(ResponseStreamTranslator):
    """The translator as the relay's ``StreamWriter``: its methods are the translator's own, no extra call per event."""

    __slots__ = ()

    chunk = ResponseStreamTranslator.feed
    done = ResponseStreamTranslator.finish

    def error(self, error: GatewayError) -> bytes:
        return self.fail(error.code or "server_error", error.message)


class OpenAIResponses:
    endpoint = "responses"
    envelope: Envelope = "openai"

    def __init__(self, sealer: Sealer, store: ResponseStore) -> None:
        self._sealer = sealer
        self._store = store

    def _open_reasoning(self, token: str) -> str | None:
        plain = self._sealer.open(token)
        return None if plain is None else plain.decode("utf-8", "surrogatepass")

    def model_name(self, body: Any) -> str:
        return model_of(body)

    def load(self, body: Any, key_id: str) -> Awaitable[Any] | None:
        """With ``previous_response_id``: the body with the stored conversation (the caller's own) before
        its ``input``, to await; None without one (nothing to wait for)."""
        previous = body.get("previous_response_id") if isinstance(body, dict) else None
        if previous is None:
            return None
        if not isinstance(previous, str) or not previous:
            raise invalid("previous_response_id", "must be a non-empty string")
        return self._continued(body, previous, key_id)

    async def _continued(self, body: dict[str, Any], previous: str, key_id: str) -> Any:
        record = await self._store.get(previous, key_id)
        if record is None:
            raise invalid("previous_response_id", f"no stored response with id '{previous[:64]}'")
        current = body.get("input")
        if isinstance(current, str):
            current = [{"type": "message", "role": "user", "content": current}]
        elif not isinstance(current, list):
            raise invalid("input", "must be a string or an array of input items")
        return {**body, "input": [*record["input"], *record["response"]["output"], *current]}

    def parse(self, body: Any) -> ChatRequest:
        if not isinstance(body, dict):
            raise invalid("body", "must be a JSON object")  # model_name() refused it already; for direct callers
        return parse_responses(body, self._open_reasoning)

    def render(self, answer: dict[str, Any], raw: bytes, reply: Reply) -> bytes:
        context: Context = reply.context
        context.final = chat_to_response(answer, context, self._sealer, reply.request_id, reply.model)
        if context.store:
            context.final_id = response_id(reply.request_id)  # the stored record's id
        return context.final

    def stream(self, request: ChatRequest, reply: Reply) -> ResponsesStream:
        return ResponsesStream(request.context, self._sealer, reply.request_id, reply.model)

    def on_complete(self, request: ChatRequest, key_id: str) -> Callable[[], Awaitable[None]] | None:
        """With ``store``: keep the finished response (before its last bytes go out, so the client can chain)."""
        context: Context = request.context
        if not context.store:
            return None

        async def save() -> None:
            if context.final is not None:
                record = b'{"response":%b,"input":%b}' % (context.final, dumps_compact(context.input_items))
                await self._store.save(context.final_id, key_id, record)

        return save
