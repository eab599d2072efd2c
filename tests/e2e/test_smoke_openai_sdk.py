"""The official openai SDK, pointed at a running gateway, gets answers streamed and not."""

from __future__ import annotations

import openai

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import GatewayProcess


def client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0, timeout=20)


def test_non_stream_answer_is_billed_exactly(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content": "Hi!", "usage": {"prompt_tokens": 1000, "completion_tokens": 800}})
    answer = client(gateway, key).chat.completions.create(
        model="doubao-seed-2.0-pro", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content == "Hi!"
    # 1000 * 0.47/M + 800 * 2.37/M = 0.00047 + 0.001896 = 0.002366
    assert gateway.key(key_id)["balance_usd"] == "0.997634"
    [row] = gateway.usage(key_id)
    assert row["cost_usd"] == "0.002366"
    assert row["prompt_tokens"] == 1000
    assert row["completion_tokens"] == 800
    assert row["partial"] is False


def test_stream_answer_arrives_and_is_billed(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["Hel", "lo"], "usage": {"prompt_tokens": 10, "completion_tokens": 20}})
    stream = client(gateway, key).chat.completions.create(
        model="doubao-seed-2-0-pro", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Hello"
    [row] = gateway.usage(key_id)
    assert row["prompt_tokens"] == 10
    assert row["completion_tokens"] == 20
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}
