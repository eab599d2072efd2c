"""``GET /metrics`` of real ``seedgate serve`` processes, one worker and two: after a known mix of
requests (answers, a stream, a 401, a limit refusal, an upstream error) every counter matches."""

from __future__ import annotations

import contextlib
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.dialects.openai_chat import OpenAIChat
from app.fake_upstream import FakeUpstreamThread
from tests.e2e.conftest import StartGateway
from tests.support.backends import backend_overrides, database_url, redis_url
from tests.support.gateway import (
    MASTER_KEY,
    GatewayProcess,
    api_client,
    base_config,
    chat_body,
    deep_merge,
    wait_until,
)

USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
PRO, MINI = "doubao-seed-2.0-pro", "doubao-seed-2.0-mini"
ENDPOINT = OpenAIChat.endpoint
METRICS_TOKEN = "scrape-token-0123456789abcdef"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(gateway: GatewayProcess, token: str | None = None) -> Samples:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(gateway.base_url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def series(samples: Samples, name: str, **match: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        labels: value
        for (sample, labels), value in samples.items()
        if sample == name and all(dict(labels).get(k) == v for k, v in match.items())
    }


def send_the_mix(gateway: GatewayProcess, fake: FakeUpstreamThread) -> tuple[str, str]:
    """2 answers and 1 stream (pro), a wrong key, a request over the key's tokens/min, a 500 upstream (mini)."""
    key_id, key = gateway.create_key("10")
    _, small_key = gateway.create_key("10", tpm=1)
    fake.enqueue({"usage": USAGE}, {"usage": USAGE}, {"usage": USAGE}, {"status": 500})
    with api_client(gateway, key) as client:
        for _ in range(2):
            assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
        with client.stream("POST", "/v1/chat/completions", json=chat_body(stream=True)) as stream:
            assert stream.status_code == 200
            assert b"[DONE]" in stream.read()
        failed = client.post("/v1/chat/completions", json=chat_body(model=MINI))
        assert failed.status_code == 502, failed.text
    with api_client(gateway, "sk-wrong-key-000000000000000000000") as client:
        assert client.post("/v1/chat/completions", json=chat_body()).status_code == 401
    with api_client(gateway, small_key) as client:
        refused = client.post("/v1/chat/completions", json=chat_body())
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "request_exceeds_tpm"
    wait_until(lambda: len(gateway.usage(key_id)) == 3 and gateway.key(key_id)["held_usd"] == "0.00")
    return key_id, failed.json()["error"]["code"]


def assert_counters_match(samples: Samples, gateway: GatewayProcess, key_id: str, upstream_code: str) -> None:
    requests = series(samples, "seedgate_requests_total", endpoint=ENDPOINT)
    assert requests == {
        (("code", ""), ("endpoint", ENDPOINT), ("model", PRO), ("status", "200")): 3.0,
        (("code", upstream_code), ("endpoint", ENDPOINT), ("model", MINI), ("status", "502")): 1.0,
        (("code", "invalid_api_key"), ("endpoint", ENDPOINT), ("model", ""), ("status", "401")): 1.0,
        (("code", "request_exceeds_tpm"), ("endpoint", ENDPOINT), ("model", PRO), ("status", "429")): 1.0,
    }
    durations = series(samples, "seedgate_request_duration_seconds_count", endpoint=ENDPOINT)
    assert durations == {
        (("endpoint", ENDPOINT), ("model", PRO)): 4.0,
        (("endpoint", ENDPOINT), ("model", MINI)): 1.0,
        (("endpoint", ENDPOINT), ("model", "")): 1.0,
    }
    ttft = series(samples, "seedgate_time_to_first_token_seconds_count")
    assert ttft == {(("endpoint", ENDPOINT), ("model", PRO)): 1.0}
    tokens = {dict(labels)["kind"]: value for labels, value in series(samples, "seedgate_tokens_total").items()}
    assert tokens == {"prompt": 33.0, "completion": 21.0, "cached": 9.0, "reasoning": 6.0}
    spend = series(samples, "seedgate_spend_usd_total")
    charged = sum(Decimal(row["cost_usd"]) for row in gateway.usage(key_id))
    assert set(spend) == {(("model", PRO),)}
    assert spend[(("model", PRO),)] == pytest.approx(float(charged), rel=1e-9)
    upstream = series(samples, "seedgate_upstream_requests_total")
    assert upstream == {(("status", "200"), ("upstream", "ark")): 3.0, (("status", "500"), ("upstream", "ark")): 1.0}
    assert series(samples, "seedgate_limit_rejections_total") == {(("kind", "tpm_request"),): 1.0}
    circuits = {
        dict(labels)["target"]: value for labels, value in series(samples, "seedgate_upstream_circuit_open").items()
    }
    assert circuits == {"ark/doubao-seed-2-0-pro-260215": 0.0, "ark/doubao-seed-2-0-mini-260215": 1.0}
    assert series(samples, "seedgate_open_streams") == {(): 0.0}
    assert series(samples, "seedgate_holds_outstanding") == {(): 0.0}


# one failure opens a circuit (mini's, last in the mix), and an upstream 500 is not retried
MIX_CONFIG: dict[str, Any] = {"routing": {"breaker_failures": 1, "max_attempts": 1}}


def test_every_counter_matches_a_known_mix_with_one_worker(
    start_gateway: StartGateway, fake: FakeUpstreamThread
) -> None:
    gateway = start_gateway(MIX_CONFIG)
    key_id, code = send_the_mix(gateway, fake)
    assert_counters_match(scrape(gateway), gateway, key_id, code)


def test_every_counter_matches_a_known_mix_with_two_workers(fake: FakeUpstreamThread, tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (shared / "counter_999999.db").write_bytes(b"left over by an earlier run")  # must be cleaned at start
    # worker settings travel with their secrets masked: the secrets come from the environment
    env = {
        "SEEDGATE_ADMIN__MASTER_KEY": MASTER_KEY,
        "SEEDGATE_REDIS__URL": redis_url(),
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
    }
    overrides = {**MIX_CONFIG, "server": {"workers": 2}, "redis": {"prefix": f"sg-metrics-{tmp_path.name}:"}}
    config = deep_merge(deep_merge(base_config(fake.url, database_url(tmp_path)), backend_overrides()), overrides)
    gateway = GatewayProcess(tmp_path, config, env=env)
    try:
        gateway.start(timeout=60)  # two workers import the app side by side: slow on a busy machine
        scrape_two_workers(gateway, fake, shared)
        assert gateway.terminate(timeout=30) == 0
        # workers that stopped cleanly took their live gauges with them; their counts stay on disk
        assert not list(shared.glob("gauge_live*.db"))
        assert list(shared.glob("counter_*.db"))
    finally:
        # SIGTERM: the parent stops its workers (a killed parent would leave them running)
        with contextlib.suppress(subprocess.TimeoutExpired):
            gateway.terminate(timeout=30)


def scrape_two_workers(gateway: GatewayProcess, fake: FakeUpstreamThread, shared: Path) -> None:

    # both workers write their values to the shared directory (their live gauges exist from the start)
    def workers() -> set[str]:
        return {path.stem.rsplit("_", 1)[1] for path in shared.glob("gauge_livesum_*.db")}

    wait_until(lambda: len(workers()) == 2, timeout=15)
    assert not (shared / "counter_999999.db").exists()
    key_id, code = send_the_mix(gateway, fake)
    for _ in range(10):  # each scrape is served by one worker or the other: each must see the sums
        assert_counters_match(scrape(gateway), gateway, key_id, code)


def test_scrape_needs_the_token_from_any_address_when_one_is_set(start_gateway: StartGateway) -> None:
    gateway = start_gateway({"metrics": {"token": METRICS_TOKEN}})
    assert httpx.get(gateway.base_url + "/metrics", timeout=5).status_code == 401
    wrong = httpx.get(gateway.base_url + "/metrics", headers={"authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    assert "seedgate_requests_total" in str(scrape(gateway, METRICS_TOKEN))


def test_scrape_without_a_token_is_limited_to_the_allow_list(start_gateway: StartGateway) -> None:
    # the default allow-list (loopback) is what the mix tests above scrape through
    elsewhere = start_gateway({"metrics": {"allow": ["10.0.0.0/8"]}})
    refused = httpx.get(elsewhere.base_url + "/metrics", timeout=5)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "metrics_forbidden"
