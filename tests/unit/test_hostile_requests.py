"""Hostile request bodies against each dialect's parse, in process (many more than the e2e fuzz sends).

Whatever the body, a dialect either refuses it with a client error of its own (4xx, a message) or turns
it into a request whose upstream body is JSON and whose prompt the pipeline can estimate -- never
another exception, which the gateway would have to answer with a 500. Likewise the estimate of
``/v1/messages/count_tokens``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.chat_request import ChatRequest
from app.dialects import Dialect
from app.dialects.anthropic.dialect import AnthropicMessages, Signer
from app.dialects.anthropic.tokens import estimate_input_tokens
from app.dialects.openai_chat import OpenAIChat
from app.dialects.responses.dialect import OpenAIResponses
from app.dialects.responses.seal import Sealer
from app.errors import GatewayError
from app.money.tokens import estimate_prompt_tokens
from app.stored_responses import ResponseStore
from tests.support.hostile import json_values, request_bodies, responses_bodies

EXAMPLES = 400

DIALECTS: dict[str, tuple[Dialect, st.SearchStrategy[Any]]] = {
    "chat": (OpenAIChat(), request_bodies | json_values),
    "messages": (AnthropicMessages(Signer("master-key")), request_bodies | json_values),
    # the store is only read for previous_response_id, through load(), which this test does not call
    "responses": (
        OpenAIResponses(Sealer("master-key", "test purpose"), ResponseStore.__new__(ResponseStore)),
        responses_bodies | json_values,
    ),
}


def parse(dialect: Dialect, body: Any) -> ChatRequest | GatewayError:
    try:
        dialect.model_name(body)
        return dialect.parse(body)
    except GatewayError as refusal:
        return refusal


@pytest.mark.parametrize("name", list(DIALECTS))
def test_a_hostile_body_is_refused_by_the_dialect_or_becomes_an_upstream_body_of_json(name: str) -> None:
    dialect, bodies = DIALECTS[name]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(body=bodies)
    def one(body: Any) -> None:
        result = parse(dialect, body)
        if isinstance(result, GatewayError):
            assert 400 <= result.status < 500, (result.status, result.message)
            assert result.message
            return
        orjson.dumps(result.body)  # what goes upstream is JSON
        # and the pipeline can price it: the hold's prompt estimate
        assert estimate_prompt_tokens(result.body["messages"], result.body.get("tools")) > 0
        assert isinstance(result.model, str)
        assert result.max_output_tokens is None or result.max_output_tokens > 0
        assert result.n >= 1

    one()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=request_bodies)
def test_count_tokens_estimates_any_body_with_a_message_list(body: dict[str, Any]) -> None:
    body.setdefault("messages", [])
    if isinstance(body["messages"], list):  # what /v1/messages/count_tokens lets through
        assert estimate_input_tokens(body) > 0
