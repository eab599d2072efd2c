"""Fixtures for the scale-out tests: several real gateways sharing one Postgres database and one Redis.

Rules owned here:

- These tests always run on Postgres + Redis, whatever ``SEEDGATE_TEST_BACKEND`` says: that topology
  is what they test. Without ``SEEDGATE_TEST_POSTGRES_URL`` / ``SEEDGATE_TEST_REDIS_URL`` they FAIL with
  a message saying how to start the services; a skip would let the suite pass without testing anything.
- Every cluster gets a fresh database and a Redis key prefix of its own, so tests never see each
  other's keys, balances or rate-limit buckets.
- Every process a fixture starts (gateways, a private Redis) is killed by that fixture, by its pid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.fake_upstream import FakeUpstreamThread
from tests.support import backends
from tests.support.gateway import GatewayProcess, base_config, deep_merge, free_port

REQUIRED_ENV = ("SEEDGATE_TEST_POSTGRES_URL", "SEEDGATE_TEST_REDIS_URL")

StartCluster = Callable[..., list[GatewayProcess]]


@pytest.fixture(scope="session")
def services() -> None:
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: the scale-out tests need the real Postgres and Redis; "
            'run `scripts/services start` and `eval "$(scripts/services env)"` first',
            pytrace=False,
        )


def cluster_config(upstream_url: str, *, redis_url: str | None = None) -> dict[str, Any]:
    """A gateway config on a fresh Postgres database and a Redis key prefix nobody else uses."""
    redis = {"url": redis_url or backends.redis_url(), "prefix": f"sgscale:{secrets.token_hex(6)}:"}
    return deep_merge(base_config(upstream_url, backends.create_postgres_database()), {"redis": redis})


@pytest.fixture
def start_cluster(tmp_path: Path, fake: FakeUpstreamThread, services: None) -> Iterator[StartCluster]:
    """``start(overrides, count=2, redis_url=None)``: ``count`` gateways sharing one database and one Redis
    prefix (on the shared test Redis unless ``redis_url`` names another); killed at the end of the test."""
    started: list[GatewayProcess] = []

    def start(
        overrides: dict[str, Any] | None = None, *, count: int = 2, redis_url: str | None = None
    ) -> list[GatewayProcess]:
        config = deep_merge(cluster_config(fake.url, redis_url=redis_url), overrides or {})
        gateways: list[GatewayProcess] = []
        for _ in range(count):
            gateway = GatewayProcess(tmp_path, config)
            started.append(gateway)
            gateways.append(gateway.start())  # the second `db upgrade` finds the database already migrated
        return gateways

    try:
        yield start
    finally:
        for gateway in started:
            gateway.kill()


class RedisServer:
    """A private ``redis-server`` on a free loopback port, for a test that kills it."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `scripts/services start`")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = workdir / f"redis-{self.port}.log"
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def wait_ready(self, timeout: float = 10.0) -> RedisServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer PING within {timeout} s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)


@pytest.fixture
def private_redis(tmp_path: Path, services: None) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        yield server.wait_ready()
    finally:
        server.kill()
