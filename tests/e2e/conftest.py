"""End-to-end fixtures: a fake upstream thread and real gateway processes in a temp directory."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support.backends import backend_overrides, database_url
from tests.support.gateway import GatewayProcess, base_config, deep_merge

StartGateway = Callable[..., GatewayProcess]


@pytest.fixture(autouse=True)
def collect_garbage_after_each_test() -> Iterator[None]:
    """A client left in a reference cycle (an exception's traceback keeps its frame) closes its socket
    only when the cycle is collected: whenever that happens, the ResourceWarning fails the test running
    then. Collecting after every test pins such a leak on the test that made it."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamThread) -> Iterator[GatewayProcess]:
    """One gateway for the tests that need no special configuration (keys isolate them)."""
    workdir = tmp_path_factory.mktemp("gw")
    config = deep_merge(base_config(upstream.url, database_url(workdir)), backend_overrides())
    gateway = GatewayProcess(workdir, config)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.terminate()


@pytest.fixture
def gateway(shared_gateway: GatewayProcess, fake: FakeUpstreamThread) -> GatewayProcess:
    return shared_gateway


@pytest.fixture
def start_gateway(tmp_path: Path, fake: FakeUpstreamThread) -> Iterator[StartGateway]:
    """Start a dedicated gateway with config overrides; stopped at the end of the test."""
    started: list[GatewayProcess] = []

    def start(overrides: dict[str, Any] | None = None, *, env: dict[str, str] | None = None) -> GatewayProcess:
        config = deep_merge(base_config(fake.url, database_url(tmp_path)), backend_overrides())
        config = deep_merge(config, overrides or {})
        gateway = GatewayProcess(tmp_path, config, env=env)
        started.append(gateway.start())
        return gateway

    yield start
    for gateway in started:
        gateway.kill()
