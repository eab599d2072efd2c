"""A real ``seedgate serve`` process on a loopback port, configured from a dict, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import orjson
import yaml
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.backends import backend_overrides, database_url

MASTER_KEY = "test-master-key-0123456789-abcdefghijkl"
UPSTREAM_KEY = "upstream-secret-key-ABCDEFGHIJKLMNOPQRSTUVWXYZ"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_config(upstream_url: str, db_url: str) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_grace_seconds": 5},
        "database": {"url": db_url},
        "admin": {"master_key": MASTER_KEY},
        "upstreams": [{"name": "ark", "base_url": upstream_url, "api_key": UPSTREAM_KEY, "read_timeout": 5}],
        "models": [
            {
                "id": "doubao-seed-2.0-pro",
                "upstream": "ark",
                "upstream_model": "doubao-seed-2-0-pro-260215",
                "aliases": ["claude-sonnet-4-6", "pro-latest"],
                "context_window": 262144,
                "max_output_tokens": 1000,
                "price": {"input": 0.47, "output": 2.37, "cached_input": 0.09},
                "features": ["thinking", "vision"],
            },
            {
                "id": "doubao-seed-2.0-mini",
                "upstream": "ark",
                "upstream_model": "doubao-seed-2-0-mini-260215",
                "max_output_tokens": 1000,
                "price": {"input": 0.14, "output": 0.69},
            },
        ],
        "limits": {"per_ip": {"requests": 100000, "window_seconds": 10}},
        "billing": {"recovery_interval_seconds": 1},
        # a failure test on a shared gateway must not open the circuit for every later test
        "routing": {"breaker_failures": 1000},
    }


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class GatewayProcess:
    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.serve_args = serve_args
        self.migrate = True  # False: the test migrated the server database itself
        self.port = free_port()
        config = deep_merge(config, {"server": {"port": self.port}})
        self.config = config
        self.config_path = workdir / f"seedgate-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"seedgate-{self.port}.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        if self.migrate and not str(self.config["database"]["url"]).startswith("sqlite"):
            # `serve` migrates SQLite by itself; a server database is migrated once, as in production
            subprocess.run(
                [sys.executable, "-m", "app", "db", "upgrade", "--config", str(self.config_path)],
                check=True,
                capture_output=True,
                cwd=self.workdir,
                env=self._env,
                timeout=60,
            )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--config", str(self.config_path), *self.serve_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"seedgate exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"seedgate did not become healthy:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    # --- admin helpers -------------------------------------------------------------------------
    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10)

    def create_key(self, balance_usd: str = "10", **fields: Any) -> tuple[str, str]:
        with self.admin() as admin:
            response = admin.post("/admin/keys", json={"name": "test", "balance_usd": balance_usd, **fields})
            response.raise_for_status()
            body = response.json()
            return body["id"], body["key"]

    def key(self, key_id: str) -> dict[str, Any]:
        with self.admin() as admin:
            response = admin.get(f"/admin/keys/{key_id}")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def usage(self, key_id: str) -> list[dict[str, Any]]:
        with self.admin() as admin:
            response = admin.get("/admin/usage", params={"key_id": key_id})
            response.raise_for_status()
            rows: list[dict[str, Any]] = response.json()["data"]
            return rows

    def ledger(self) -> dict[str, Any]:
        with self.admin() as admin:
            response = admin.get("/admin/ledger")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result


# --- helpers shared by the end-to-end suites ---------------------------------------------------
ERROR_KEYS = frozenset({"message", "type", "param", "code"})
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def openai_client(gateway: GatewayProcess, key: str, *, timeout: float = 20.0) -> openai.OpenAI:
    """The official SDK as a client would configure it, without retries so every status is seen once."""
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0, timeout=timeout)


def api_client(gateway: GatewayProcess, key: str | None = None, *, timeout: float = 20.0) -> httpx.Client:
    """Raw HTTP to the client API, for exact statuses, headers and bodies."""
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.Client(base_url=gateway.base_url, headers=headers, timeout=timeout)


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "doubao-seed-2.0-pro", "messages": HELLO, **fields}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an OpenAI error envelope with ``status``; return its ``error`` object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert ERROR_KEYS <= set(error) <= ERROR_KEYS | {"fallback_suggestion"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    return error


def wait_until(check: Callable[[], T | None], *, timeout: float = 5.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s (last result: {result!r})")
        time.sleep(interval)


def assert_untouched(gateway: GatewayProcess, key_id: str, balance_usd: str) -> None:
    """A refused request leaves the key as it was: same balance, nothing held or spent, no usage row."""
    key = gateway.key(key_id)
    assert (key["balance_usd"], key["held_usd"], key["spent_usd"]) == (balance_usd, "0.00", "0.00"), key
    assert gateway.usage(key_id) == []


def assert_prompt_estimate_charged(gateway: GatewayProcess, key_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The upstream had the request and timed out: each row is its prompt estimate, partial and estimated,
    no answer tokens, and the balance went down by exactly the rows' cost."""
    rows = settled_rows(gateway, key_id, count)
    for row in rows:
        assert (row["partial"], row["estimated"], row["completion_tokens"]) == (True, True, 0), row
        assert row["prompt_tokens"] > 0, row
        assert Decimal(row["cost_usd"]) > 0, row
    key = gateway.key(key_id)
    spent = sum(Decimal(row["cost_usd"]) for row in rows)
    assert Decimal(key["topped_up_usd"]) - Decimal(key["balance_usd"]) == spent, key
    assert gateway.ledger()["balanced"] is True
    return rows


def settled_rows(gateway: GatewayProcess, key_id: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Wait until the key has ``count`` usage rows and nothing held; return the rows."""

    def check() -> list[dict[str, Any]] | None:
        rows = gateway.usage(key_id)
        if len(rows) >= count and gateway.key(key_id)["held_usd"] == "0.00":
            return rows
        return None

    rows = wait_until(check, timeout=timeout)
    assert len(rows) == count, rows
    return rows


def sse_data(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order (comments and blank lines dropped)."""
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def sqlite_path(gateway: GatewayProcess) -> Path:
    url: str = gateway.config["database"]["url"]
    prefix = "sqlite+aiosqlite:///"
    assert url.startswith(prefix), url
    return Path(url[len(prefix) :])


# Upstream-failure suites run on their own gateway: a failing test must not open the shared gateway's
# circuit breaker for the tests after it, and two attempts show the retry rule without slowing down.
FAULT_TOLERANT = {
    "routing": {"max_attempts": 2, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "breaker_failures": 1000}
}


@contextlib.contextmanager
def dedicated_gateway(workdir: Path, upstream_url: str, overrides: dict[str, Any]) -> Iterator[GatewayProcess]:
    """A gateway of its own (for a module-scoped fixture) on the selected test backend."""
    config = deep_merge(deep_merge(base_config(upstream_url, database_url(workdir)), backend_overrides()), overrides)
    gateway = GatewayProcess(workdir, config).start()
    try:
        yield gateway
    finally:
        gateway.terminate()


def database_bytes(gateway: GatewayProcess) -> bytes:
    """Everything the gateway stored: the SQLite files, or every row of every table on Postgres."""
    url: str = gateway.config["database"]["url"]
    if url.startswith("sqlite"):
        path = sqlite_path(gateway)
        files = [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-journal"))]
        return b"".join(f.read_bytes() for f in files if f.exists())
    return _postgres_rows(url).encode("utf-8", "surrogatepass")


def _postgres_rows(url: str) -> str:
    async def dump() -> str:
        engine = create_async_engine(url)
        parts: list[str] = []
        try:
            async with engine.connect() as conn:
                tables = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
                for (table,) in tables.all():
                    rows = await conn.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608 -- names from pg_tables
                    parts.extend(repr(tuple(row)) for row in rows.all())
        finally:
            await engine.dispose()
        return "\n".join(parts)

    return asyncio.run(dump())


FAULTS_READ_TIMEOUT = 1.0


def faults_config(upstream_url: str) -> dict[str, Any]:
    """``FAULT_TOLERANT`` plus a short read timeout on ``ark`` and a model ``dead-model`` on a closed port."""
    models = base_config(upstream_url, "sqlite://")["models"]
    dead = {"id": "dead-model", "upstream": "dead", "max_output_tokens": 1000, "price": {"input": 0.47, "output": 2.37}}
    upstreams = [
        {"name": "ark", "base_url": upstream_url, "api_key": UPSTREAM_KEY, "read_timeout": FAULTS_READ_TIMEOUT},
        {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key": UPSTREAM_KEY},
    ]
    return {**FAULT_TOLERANT, "upstreams": upstreams, "models": [*models, dead]}


def sse_payloads(text: str) -> list[Any]:
    """The ``data:`` payloads of a client stream, JSON-decoded (``[DONE]`` kept as the string)."""
    return [data if data == "[DONE]" else orjson.loads(data) for data in sse_data(text)]


def streamed_content(payloads: list[Any]) -> str:
    """The answer text carried by OpenAI stream chunks."""
    return "".join(
        choice["delta"].get("content") or ""
        for payload in payloads
        if isinstance(payload, dict)
        for choice in payload.get("choices", ())
    )


def sdk_stream(gateway: GatewayProcess, key: str, model: str) -> tuple[str, str | None]:
    """(concatenated content, last finish_reason) of a stream read through the openai SDK."""
    pieces: list[str] = []
    finish: str | None = None
    with openai_client(gateway, key) as client:
        for chunk in client.chat.completions.create(model=model, messages=HELLO, stream=True):
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
    return "".join(pieces), finish
