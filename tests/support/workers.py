"""``seedgate serve --workers N`` for end-to-end tests: secrets only through ``${VAR}``, pids of the workers.

Rules owned here:

- The YAML names the master key, the upstream key and the Redis URL only as ``${VAR}``; the real
  values live in the gateway's environment, as ``config.example.yaml`` and the compose ``.env`` do.
- A worker gateway always runs on a fresh Postgres database and a Redis prefix of its own (several
  workers need shared limits, and SQLite serves one process): without ``SEEDGATE_TEST_POSTGRES_URL``
  and ``SEEDGATE_TEST_REDIS_URL`` the tests fail saying how to start the services.
- Which worker answered is read from ``/readyz`` (``pid``, ``inflight``), each probe on a new
  connection so the kernel hands it to any worker; probing is bounded in count.
- Cleanup kills the parent and every worker pid the test saw, by pid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.fake_upstream import FakeUpstreamThread
from app.migrate import upgrade
from tests.support import backends
from tests.support.gateway import MASTER_KEY, UPSTREAM_KEY, GatewayProcess, base_config, deep_merge, wait_until
from tests.support.streams import StreamRead

WORKERS = 2
SECRET_ENV = {
    "SG_TEST_MASTER_KEY": MASTER_KEY,
    "SG_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
}
PROBES = 80


def require_services() -> None:
    missing = [name for name in ("SEEDGATE_TEST_POSTGRES_URL", "SEEDGATE_TEST_REDIS_URL") if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: --workers tests need Postgres and Redis; "
            'run `scripts/services start` and `eval "$(scripts/services env)"` first',
            pytrace=False,
        )


def workers_config(
    upstream_url: str, extra: dict[str, Any] | None = None, *, db_url: str | None = None
) -> dict[str, Any]:
    """A config whose secrets are all ``${VAR}`` references, on a fresh Postgres database (unless ``db_url``)
    and a Redis prefix of its own."""
    config = base_config(upstream_url, db_url or backends.create_postgres_database())
    config["admin"] = {"master_key": "${SG_TEST_MASTER_KEY}"}
    config["upstreams"][0]["api_key"] = "${SG_TEST_UPSTREAM_KEY}"
    config["redis"] = {"url": "${SG_TEST_WORKERS_REDIS_URL}", "prefix": f"sgworkers:{secrets.token_hex(6)}:"}
    return deep_merge(config, extra or {})


class WorkersGateway(GatewayProcess):
    def __init__(
        self, workdir: Path, config: dict[str, Any], *, redis_url: str | None = None, workers: int = WORKERS
    ) -> None:
        env = {**SECRET_ENV, "SG_TEST_WORKERS_REDIS_URL": redis_url or backends.redis_url()}
        super().__init__(workdir, config, env=env, serve_args=("--workers", str(workers)))
        self.workers = workers
        self.seen: set[int] = set()
        # no keep-alive: every probe is a new connection, which the kernel may hand to any worker
        self._probes = httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))

    def start(self, timeout: float = 60.0) -> WorkersGateway:
        url = str(self.config["database"]["url"])
        if not url.startswith("sqlite"):
            upgrade(url)  # in this process: one interpreter fewer to start on a busy machine
            self.migrate = False
        super().start(timeout)
        wait_until(lambda: f"all {self.workers} workers are ready" in self.logs(), timeout=timeout, interval=0.1)
        return self

    def probe(self) -> dict[str, Any] | None:
        """``/readyz`` on a new connection: the answering worker's pid and in-flight count."""
        try:
            body: dict[str, Any] = self._probes.get(self.base_url + "/readyz").json()
        except (httpx.TransportError, ValueError):
            return None
        self.seen.add(int(body["pid"]))
        return body

    def inflight_by_pid(self, *, want: int) -> dict[int, int]:
        """In-flight requests per worker pid, probing until ``want`` workers answered (at most ``PROBES``)."""
        found: dict[int, int] = {}
        for _ in range(PROBES):
            body = self.probe()
            if body is not None and "inflight" in body:
                found[int(body["pid"])] = int(body["inflight"])
            if len(found) >= want:
                break
        return found

    def kill(self) -> None:
        super().kill()
        self._probes.close()
        for pid in self.seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def streams_on_every_worker(
    gateway: WorkersGateway, fake: FakeUpstreamThread, key: str, scripts: list[dict[str, Any]]
) -> tuple[list[StreamRead], list[threading.Thread], dict[int, int]]:
    """Open streams (script ``i % len(scripts)`` for the i-th) one by one, each forwarding content, until
    every worker has at least one open; at most 10. Returns the reads, their threads and pid -> in-flight."""
    reads: list[StreamRead] = []
    threads: list[threading.Thread] = []
    inflight: dict[int, int] = {}
    for i in range(10):
        fake.enqueue(scripts[i % len(scripts)])
        read = StreamRead()
        thread = threading.Thread(target=read.read, args=(gateway, key))
        thread.start()
        reads.append(read)
        threads.append(thread)
        assert read.first_content.wait(10), "no content arrived on a stream"
        assert (read.status, read.error) == (200, None), (read.status, read.error)
        inflight = gateway.inflight_by_pid(want=gateway.workers)
        if i >= 1 and len(inflight) == gateway.workers and all(inflight.values()):
            return reads, threads, inflight
    raise AssertionError(f"streams never reached every worker: {inflight}")
