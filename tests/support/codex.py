"""The Codex CLI (npm ``@openai/codex``, pinned in ``tests/clients/codex/package-lock.json``), run headless.

``codex_binary`` installs it with ``npm ci`` when ``node_modules`` is missing (about a minute, once).
``codex_home`` writes the README's ``config.toml`` (a ``seedgate`` model provider, ``wire_api =
"responses"``, the key from ``SEEDGATE_API_KEY``) into a temp ``CODEX_HOME``; ``run_codex`` runs
``codex exec --json`` there and returns its exit code, its JSONL events and the wall time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "codex"
ENTRY = CLIENT_DIR / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
INSTALL_TIMEOUT = 600.0


def codex_binary() -> Path:
    if not ENTRY.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the Codex CLI tests need Node.js and npm on PATH")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CLIENT_DIR, check=True, timeout=INSTALL_TIMEOUT)
    return ENTRY


def codex_config(base_url: str, model: str) -> str:
    """The README's config.toml for Seedgate (keep the two identical)."""
    return f"""model = "{model}"
model_provider = "seedgate"

[model_providers.seedgate]
name = "Seedgate"
base_url = "{base_url}/v1"
env_key = "SEEDGATE_API_KEY"
wire_api = "responses"
"""


@dataclass
class CodexRun:
    returncode: int
    events: list[dict[str, Any]]
    seconds: float
    stderr: str

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]


def run_codex(workdir: Path, base_url: str, key: str, prompt: str, *, model: str, timeout: float = 45.0) -> CodexRun:
    home = workdir / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(codex_config(base_url, model))
    env = {**os.environ, "CODEX_HOME": str(home), "SEEDGATE_API_KEY": key}
    node = shutil.which("node") or "node"
    command = [node, str(codex_binary()), "exec", "--json", "--skip-git-repo-check", "-s", "workspace-write", prompt]
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    events = [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return CodexRun(done.returncode, events, time.monotonic() - started, done.stderr)
