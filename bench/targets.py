"""The systems a benchmark run measures, started side by side against one fake upstream.

Rules this module owns:

- `direct`: the fake upstream itself (its own process is the "server" whose CPU is read).
- `seedgate`: `python -m app serve` from the source tree, one worker pinned to the gateway core, in its
  normal configuration: SQLite on disk in the run's work directory (WAL, synchronous=FULL), a real key
  created through the admin API (stored hashed), and every request limited, reserved, settled and
  recorded. Only the limits are raised, so the load generator is never refused.
- `forwarder` (bench/forwarder.py) runs on any interpreter with aiohttp (Seedgate's, else the LiteLLM
  venv's); `litellm` runs from `bench/.venv-litellm` when it exists, with one worker and no database.
  Both are pinned to the gateway core.
- All of them listen on 127.0.0.1; each has a client-facing model name and key of its own.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.procs import Service, free_port, pinned

BENCH = Path(__file__).resolve().parent
LITELLM_VENV = BENCH / ".venv-litellm"
UPSTREAM_KEY = "bench-upstream-key-0123456789abcdefghijklmnop"
UPSTREAM_MODEL = "fake-model"
MODEL = "bench-model"
HUGE = 1_000_000_000


@dataclass
class System:
    """One thing under test: where clients connect, how they authenticate, whose CPU to read."""

    name: str
    port: int
    model: str
    headers: dict[str, str]
    service: Service

    @property
    def pid(self) -> int:
        return self.service.pid


def start_upstream(python: str, workdir: Path, core: int | None, slow_delay: float) -> tuple[Service, str]:
    port = free_port()
    argv = pinned(core, [python, "-m", "bench.upstream", "--port", str(port), "--slow-delay", str(slow_delay)])
    service = Service("upstream", argv, workdir / "upstream.log", f"http://127.0.0.1:{port}/v1/models", BENCH.parent)
    return service.start(), f"http://127.0.0.1:{port}/v1"


def direct(upstream: Service) -> System:
    port = int(upstream.health_url.split(":")[2].split("/")[0])
    return System("direct", port, UPSTREAM_MODEL, {"authorization": f"Bearer {UPSTREAM_KEY}"}, upstream)


def seedgate_config(upstream_url: str, workdir: Path, port: int, master_key: str) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace_seconds": 5},
        "database": {"url": f"sqlite+aiosqlite:///{workdir / 'seedgate.db'}"},
        "admin": {"master_key": master_key},
        "upstreams": [
            {
                "name": "fake",
                "base_url": upstream_url,
                "api_key": UPSTREAM_KEY,
                "read_timeout": 60,
                "max_connections": 2000,
            }
        ],
        "models": [
            {
                "id": MODEL,
                "upstream": "fake",
                "upstream_model": UPSTREAM_MODEL,
                "max_output_tokens": 256,
                "price": {"input": 0.47, "output": 2.37, "cached_input": 0.09},
            }
        ],
        "limits": {
            "per_ip": {"requests": HUGE, "window_seconds": 10},
            "key_defaults": {"rpm": HUGE, "tpm": HUGE * 1000, "max_concurrent": 100_000},
        },
    }


def _post_json(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 -- a loopback URL we built
        url,
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 -- loopback URL we built
        result: dict[str, Any] = json.loads(response.read())
        return result


def start_seedgate(python: str, source: Path, upstream_url: str, workdir: Path, core: int | None) -> System:
    port = free_port()
    master_key = secrets.token_urlsafe(32)
    config_path = workdir / "seedgate.yaml"
    config_path.write_text(yaml.safe_dump(seedgate_config(upstream_url, workdir, port, master_key)))
    argv = pinned(core, [python, "-m", "app", "serve", "--config", str(config_path)])
    base = f"http://127.0.0.1:{port}"
    service = Service("seedgate", argv, workdir / "seedgate.log", base + "/healthz", source).start()
    created = _post_json(base + "/admin/keys", {"name": "bench", "balance_usd": "100000"}, master_key)
    return System("seedgate", port, MODEL, {"authorization": f"Bearer {created['key']}"}, service)


def litellm_available() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


def forwarder_python() -> str | None:
    """An interpreter with aiohttp and uvloop: Seedgate's own when it has them, else the LiteLLM venv's."""
    if importlib.util.find_spec("aiohttp") is not None:
        return sys.executable
    if (LITELLM_VENV / "bin" / "python").exists():
        return str(LITELLM_VENV / "bin" / "python")
    return None


def start_forwarder(python: str, upstream_url: str, workdir: Path, core: int | None) -> System:
    port = free_port()
    key = "sk-forwarder-" + secrets.token_hex(16)
    argv = [python, str(BENCH / "forwarder.py"), "--port", str(port)]
    argv += [
        "--upstream",
        upstream_url,
        "--key",
        key,
        "--upstream-key",
        UPSTREAM_KEY,
        "--model",
        f"{MODEL}={UPSTREAM_MODEL}",
    ]
    service = Service("forwarder", pinned(core, argv), workdir / "forwarder.log", f"http://127.0.0.1:{port}/health")
    return System("forwarder", port, MODEL, {"authorization": f"Bearer {key}"}, service.start())


def start_litellm(upstream_url: str, workdir: Path, core: int | None) -> System:
    port = free_port()
    key = "sk-litellm-" + secrets.token_hex(16)
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": upstream_url,
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "general_settings": {"master_key": key},
        "litellm_settings": {"drop_params": True, "telemetry": False},
    }
    config_path = workdir / "litellm.yaml"
    config_path.write_text(yaml.safe_dump(config))
    argv = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config_path), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--num_workers", "1"]
    # no network at start-up: the bundled price map instead of fetching it, no telemetry
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    health = f"http://127.0.0.1:{port}/health/liveliness"
    service = Service("litellm", pinned(core, argv), workdir / "litellm.log", health, env=env)
    return System("litellm", port, MODEL, {"authorization": f"Bearer {key}"}, service.start(timeout=180))
