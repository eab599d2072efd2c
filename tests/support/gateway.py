"""A real ``seedgate serve`` process on a loopback port, configured from a dict, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

MASTER_KEY = "test-master-key-0123456789-abcdefghijkl"
UPSTREAM_KEY = "upstream-secret-key-ABCDEFGHIJKLMNOPQRSTUVWXYZ"


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
    def __init__(self, workdir: Path, config: dict[str, Any], *, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        config = deep_merge(config, {"server": {"port": self.port}})
        self.config = config
        self.config_path = workdir / f"seedgate-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"seedgate-{self.port}.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--config", str(self.config_path)],
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
