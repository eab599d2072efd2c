"""An upstream event whose JSON spans several ``data:`` lines (legal SSE) reaches the SDK intact (issue 11)."""

from __future__ import annotations

from app.fake_upstream import FakeUpstreamThread
from tests.support.gateway import HELLO, GatewayProcess, api_client, chat_body, openai_client, settled_rows, sse_data


def test_the_sdk_reads_a_stream_whose_upstream_events_span_several_data_lines(
    gateway: GatewayProcess, fake: FakeUpstreamThread
) -> None:
    key_id, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["multi", "-line", " data"], "multiline_data": True})
    with openai_client(gateway, key) as client:
        stream = client.chat.completions.create(model="doubao-seed-2.0-pro", messages=HELLO, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "multi-line data"
    [row] = settled_rows(gateway, key_id)
    assert row["status"] == "ok"


def test_every_line_of_a_relayed_event_is_a_data_line(gateway: GatewayProcess, fake: FakeUpstreamThread) -> None:
    _, key = gateway.create_key("1")
    fake.enqueue({"content_chunks": ["a", "b"], "multiline_data": True})
    with api_client(gateway, key) as http:
        response = http.post("/v1/chat/completions", json=chat_body(stream=True))
    assert response.status_code == 200
    for block in response.text.strip().split("\n\n"):
        assert all(line.startswith(("data: ", ":")) for line in block.split("\n")), block
    assert sse_data(response.text)[-1] == "[DONE]"
