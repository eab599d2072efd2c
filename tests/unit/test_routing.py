"""Target order and failover: who is tried, how often, how long the router waits, and what it gives up with."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from app.breaker import Breakers
from app.catalog import CatalogModel, Prices, Target
from app.errors import InvalidRequest, RateLimited, ServiceUnavailable, UpstreamError, UpstreamTimeout
from app.routing import Router
from app.settings import ModelSettings, PriceSettings, RoutingSettings, UpstreamSettings
from app.upstream import Upstream, UpstreamFailure, UpstreamResponse, classify_error


def http(status: int, retry_after: str | None = None, *, name: str = "x") -> UpstreamFailure:
    """What ``Upstream.open`` raises for an HTTP answer other than 200."""
    body = orjson.dumps({"error": {"message": "scripted", "code": "Scripted"}})
    return classify_error(name, status, body, retry_after)


def unreachable() -> UpstreamFailure:
    """What ``Upstream.open`` raises for a connect error or pool timeout."""
    return UpstreamFailure(UpstreamError("The upstream service is unreachable."), retryable=True)


def timed_out() -> UpstreamFailure:
    """What ``Upstream.open`` raises when the upstream took the request and then went silent."""
    return UpstreamFailure(UpstreamTimeout("The upstream service timed out."), retryable=False)


def broken() -> UpstreamFailure:
    """What ``Upstream.open`` raises when the connection broke after the request was written."""
    return UpstreamFailure(UpstreamError("The upstream connection failed."), retryable=False)


class AcceptedAnswer:
    def __init__(self) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        yield b""

    async def aclose(self) -> None:
        return None


class ScriptedUpstream(Upstream):
    """An ``Upstream`` that answers from a list of outcomes (200 once the list is used up)."""

    def __init__(self, name: str, calls: list[tuple[str, dict[str, Any]]]) -> None:
        super().__init__(UpstreamSettings(name=name, base_url=f"http://{name}.invalid/v1", api_key=SecretStr("k")))
        self.steps: list[UpstreamFailure | float] = []  # a float: answer 200 after that many seconds
        self.accepted: list[UpstreamResponse] = []
        self._calls = calls

    async def open(self, body: dict[str, Any], *, read_timeout: float | None = None) -> UpstreamResponse:
        self._calls.append((self.name, body))
        step = self.steps.pop(0) if self.steps else 0.0
        if isinstance(step, UpstreamFailure):
            raise step
        if step:
            await asyncio.sleep(step)
        response: UpstreamResponse = AcceptedAnswer()  # never read: the router only hands it on
        self.accepted.append(response)
        return response


class ScriptedUpstreams:
    def __init__(self, names: list[str]) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.by_name = {name: ScriptedUpstream(name, self.calls) for name in names}
        self.upstreams: dict[str, Upstream] = dict(self.by_name)

    def script(self, name: str, *steps: UpstreamFailure | float) -> None:
        self.by_name[name].steps.extend(steps)

    def called(self) -> list[str]:
        return [name for name, _ in self.calls]


def model(*targets: Target) -> CatalogModel:
    settings = ModelSettings(id="m", upstream="a", price=PriceSettings(input=Decimal(1), output=Decimal(1)))
    return CatalogModel(
        id="m",
        aliases=(),
        targets=targets,
        context_window=1000,
        max_output_tokens=100,
        prices=Prices(input=1, output=1, cached_input=1),
        settings=settings,
    )


def routing(**fields: Any) -> RoutingSettings:
    defaults: dict[str, Any] = {"max_attempts": 3, "backoff_seconds": 0.0, "breaker_failures": 100}
    return RoutingSettings(**{**defaults, **fields})


BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": False}


def deadline(seconds: float = 30.0) -> float:
    return asyncio.get_running_loop().time() + seconds


A = Target("a", "model-a")
B = Target("b", "model-b")
C = Target("c", "model-c", priority=2)


@pytest.fixture
def scripted() -> ScriptedUpstreams:
    return ScriptedUpstreams(["a", "b", "c"])


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every back-off the router asks for instead of waiting it out."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        asked.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return asked


# --- order ---------------------------------------------------------------------------------------


def test_lower_priority_number_is_always_tried_first() -> None:
    router = Router(routing(), {}, rng=random.Random(7))
    low = Target("a", "x", weight=1000, priority=5)
    high = Target("b", "y", weight=1, priority=0)
    for _ in range(200):
        assert router.order(model(low, high)) == [high, low]


def test_traffic_splits_by_weight_within_a_priority() -> None:
    heavy = Target("a", "x", weight=3)
    light = Target("b", "y", weight=1)
    backup = Target("c", "z", priority=2)
    router = Router(routing(), {}, rng=random.Random(20240215))
    firsts = Counter(router.order(model(heavy, light, backup))[0] for _ in range(4000))
    assert backup not in firsts
    share = firsts[heavy] / 4000
    assert 0.72 < share < 0.78, firsts


def test_every_target_appears_once_in_the_order() -> None:
    targets = (A, B, C, Target("d", "w", weight=5))
    router = Router(routing(), {}, rng=random.Random(1))
    for _ in range(50):
        order = router.order(model(*targets))
        assert sorted(order, key=lambda t: t.key) == sorted(targets, key=lambda t: t.key)


# --- failover ------------------------------------------------------------------------------------

MAIN_AND_BACKUP = (A, Target("b", "model-b", priority=2))


async def test_first_target_that_accepts_answers_and_attempts_are_counted(scripted: ScriptedUpstreams) -> None:
    scripted.script("a", http(503))
    router = Router(routing(), scripted.upstreams)
    target, response, attempts = await router.open(model(*MAIN_AND_BACKUP), BODY, deadline=deadline())
    assert (target.upstream, attempts) == ("b", 2)
    assert scripted.by_name["b"].accepted == [response]
    assert scripted.called() == ["a", "b"]
    # each attempt names the model as its own target knows it, over the same request body
    assert [body["model"] for _, body in scripted.calls] == ["model-a", "model-b"]
    assert all(body["messages"] == [{"role": "user", "content": "hi"}] for _, body in scripted.calls)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_a_single_target_is_retried_after_a_refusal_before_content(
    scripted: ScriptedUpstreams, status: int
) -> None:
    scripted.script("a", http(status), http(status))
    router = Router(routing(max_backoff_seconds=0), scripted.upstreams)
    _, _, attempts = await router.open(model(A), BODY, deadline=deadline())
    assert attempts == 3
    assert scripted.called() == ["a", "a", "a"]


@pytest.mark.parametrize(
    ("status", "error"), [(400, InvalidRequest), (401, UpstreamError), (403, UpstreamError), (404, UpstreamError)]
)
async def test_a_client_class_answer_is_not_retried(
    scripted: ScriptedUpstreams, status: int, error: type[Exception]
) -> None:
    scripted.script("a", http(status))
    router = Router(routing(), scripted.upstreams)
    with pytest.raises(UpstreamFailure) as caught:
        await router.open(model(*MAIN_AND_BACKUP), BODY, deadline=deadline())
    assert isinstance(caught.value.error, error)
    assert caught.value.attempts == 1
    assert scripted.called() == ["a"]


@pytest.mark.parametrize("failure", [timed_out, broken], ids=["read-timeout", "broken-connection"])
async def test_a_request_the_upstream_took_is_not_sent_again(scripted: ScriptedUpstreams, failure: Any) -> None:
    scripted.script("a", failure())
    router = Router(routing(), scripted.upstreams)
    with pytest.raises(UpstreamFailure) as caught:
        await router.open(model(*MAIN_AND_BACKUP), BODY, deadline=deadline())
    assert caught.value.error.status in (502, 504)
    assert caught.value.attempts == 1
    assert scripted.called() == ["a"]


async def test_unreachable_everywhere_stops_at_max_attempts_with_a_502(scripted: ScriptedUpstreams) -> None:
    scripted.script("a", *(unreachable() for _ in range(10)))
    scripted.script("b", *(unreachable() for _ in range(10)))
    router = Router(routing(max_attempts=4), scripted.upstreams)
    with pytest.raises(UpstreamFailure) as caught:
        await router.open(model(A, B), BODY, deadline=deadline())
    assert isinstance(caught.value.error, UpstreamError)
    assert caught.value.error.status == 502
    assert caught.value.attempts == 4
    assert Counter(scripted.called()) == {"a": 2, "b": 2}  # the attempts alternate between the targets


async def test_the_last_refusal_reaches_the_client_when_attempts_run_out(scripted: ScriptedUpstreams) -> None:
    scripted.script("a", http(503), http(503), http(429, "7"))
    router = Router(routing(max_backoff_seconds=0), scripted.upstreams)
    with pytest.raises(UpstreamFailure) as caught:
        await router.open(model(A), BODY, deadline=deadline())
    assert isinstance(caught.value.error, RateLimited)
    assert caught.value.error.headers["retry-after"] == "7"
    assert caught.value.attempts == 3


async def test_an_answer_slower_than_the_total_deadline_is_a_timeout_without_retry(
    scripted: ScriptedUpstreams,
) -> None:
    scripted.script("a", 5.0)
    router = Router(routing(), scripted.upstreams)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamFailure) as caught:
        await router.open(model(*MAIN_AND_BACKUP), BODY, deadline=deadline(0.2))
    assert loop.time() - started < 1.0
    assert isinstance(caught.value.error, UpstreamTimeout)
    assert caught.value.attempts == 1
    assert scripted.called() == ["a"]
    assert router.breakers["a/model-a"].consecutive_failures == 1


# --- back-off ------------------------------------------------------------------------------------


async def test_back_off_doubles_between_attempts(scripted: ScriptedUpstreams, sleeps: list[float]) -> None:
    scripted.script("a", unreachable(), unreachable(), unreachable())
    router = Router(routing(max_attempts=4, backoff_seconds=0.1, max_backoff_seconds=5), scripted.upstreams)
    _, _, attempts = await router.open(model(A), BODY, deadline=deadline())
    assert attempts == 4
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])


async def test_back_off_honours_retry_after(scripted: ScriptedUpstreams, sleeps: list[float]) -> None:
    scripted.script("a", http(429, "2"), http(503, "3"))
    router = Router(routing(backoff_seconds=0.1, max_backoff_seconds=10), scripted.upstreams)
    _, _, attempts = await router.open(model(A), BODY, deadline=deadline())
    assert attempts == 3
    assert sleeps == pytest.approx([2.0, 3.0])


async def test_back_off_never_exceeds_its_cap(scripted: ScriptedUpstreams, sleeps: list[float]) -> None:
    scripted.script("a", http(429, "60"))
    router = Router(routing(backoff_seconds=0.1, max_backoff_seconds=1.5), scripted.upstreams)
    await router.open(model(A), BODY, deadline=deadline())
    assert sleeps == pytest.approx([1.5])


async def test_no_retry_whose_wait_would_pass_the_deadline(scripted: ScriptedUpstreams, sleeps: list[float]) -> None:
    scripted.script("a", http(429, "5"))
    router = Router(routing(backoff_seconds=0.1, max_backoff_seconds=10), scripted.upstreams)
    with pytest.raises(UpstreamFailure) as caught:
        await router.open(model(A), BODY, deadline=deadline(2.0))
    assert isinstance(caught.value.error, RateLimited)
    assert caught.value.error.headers["retry-after"] == "5"
    assert sleeps == []
    assert scripted.called() == ["a"]


async def test_a_real_back_off_really_waits(scripted: ScriptedUpstreams) -> None:
    scripted.script("a", unreachable())
    router = Router(routing(backoff_seconds=0.2), scripted.upstreams)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await router.open(model(A), BODY, deadline=deadline())
    assert 0.18 <= loop.time() - started < 2.0


# --- circuit breaking ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_target_with_an_open_circuit_is_skipped(scripted: ScriptedUpstreams) -> None:
    scripted.script("a", http(503), http(503))
    router = Router(routing(breaker_failures=2), scripted.upstreams)
    for _ in range(2):
        _, _, attempts = await router.open(model(*MAIN_AND_BACKUP), BODY, deadline=deadline())
        assert attempts == 2
    target, _, attempts = await router.open(model(*MAIN_AND_BACKUP), BODY, deadline=deadline())
    assert (target.upstream, attempts) == ("b", 1)
    assert scripted.called() == ["a", "b", "a", "b", "b"]
    health = {row["target"]: row for row in router.snapshot()}
    assert health["a/model-a"]["state"] == "open"
    assert health["a/model-a"]["upstream"] == "a"
    assert health["a/model-a"]["recent_error_rate"] == 1.0
    assert health["b/model-b"]["state"] == "closed"
    assert health["b/model-b"]["recent_error_rate"] == 0.0


async def test_every_circuit_open_gives_503_with_retry_after(scripted: ScriptedUpstreams) -> None:
    scripted.script("a", http(503))
    router = Router(routing(breaker_failures=1, breaker_cooldown_seconds=20), scripted.upstreams)
    with pytest.raises(UpstreamFailure):
        await router.open(model(A), BODY, deadline=deadline())
    with pytest.raises(ServiceUnavailable) as caught:
        await router.open(model(A), BODY, deadline=deadline())
    assert 1 <= int(caught.value.headers["retry-after"]) <= 20
    assert scripted.called() == ["a"]


async def test_the_client_own_4xx_does_not_count_against_a_target(scripted: ScriptedUpstreams) -> None:
    scripted.script("a", *(http(400) for _ in range(5)))
    router = Router(routing(breaker_failures=2), scripted.upstreams)
    for _ in range(5):
        with pytest.raises(UpstreamFailure):
            await router.open(model(A), BODY, deadline=deadline())
    assert router.breakers["a/model-a"].state == "closed"


async def test_a_probe_answered_with_a_4xx_does_not_shut_the_target_out(scripted: ScriptedUpstreams) -> None:
    clock = FakeClock()
    router = Router(routing(breaker_failures=1, breaker_cooldown_seconds=10), scripted.upstreams)
    router.breakers = Breakers(failures=1, cooldown=10, clock=clock)
    scripted.script("a", http(503), http(400))
    with pytest.raises(UpstreamFailure):
        await router.open(model(A), BODY, deadline=deadline())
    clock.now += 10
    with pytest.raises(UpstreamFailure) as caught:  # the probe: the upstream answers, the request was bad
        await router.open(model(A), BODY, deadline=deadline())
    assert caught.value.error.status == 400
    clock.now += 10
    _, _, attempts = await router.open(model(A), BODY, deadline=deadline())
    assert attempts == 1
    assert scripted.called() == ["a", "a", "a"]
    assert router.breakers["a/model-a"].state == "closed"
