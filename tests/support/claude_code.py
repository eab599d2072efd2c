"""The real Claude Code CLI (npm ``@anthropic-ai/claude-code``, pinned in tests/clients/claude/), run headless.

``ensure_cli`` installs it with ``npm ci`` when ``node_modules`` is missing (``scripts/services start``
does the same, and installs node and npm first on a fresh machine). ``ClaudeCode.run`` starts one
``claude -p PROMPT --output-format json`` with a throwaway ``HOME`` and ``CLAUDE_CONFIG_DIR``, no
telemetry, no auto-update and no non-essential traffic, so it only ever talks to the gateway given.
Claude Code refuses ``--dangerously-skip-permissions`` as root: tests allow tools with ``--allowedTools``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "clients" / "claude"
CLI = PACKAGE_DIR / "node_modules" / ".bin" / "claude"
INSTALL_TIMEOUT = 600.0
RUN_TIMEOUT = 60.0


def ensure_cli() -> Path:
    if CLI.exists():
        return CLI
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is missing: `scripts/services start` installs nodejs and npm")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=PACKAGE_DIR,
        check=True,
        capture_output=True,
        timeout=INSTALL_TIMEOUT,
    )
    return CLI


@dataclass(frozen=True, slots=True)
class Run:
    returncode: int
    result: dict[str, Any]  # the final JSON object of --output-format json
    seconds: float
    stderr: str


class ClaudeCode:
    def __init__(self, cli: Path, home: Path, *, base_url: str, key: str) -> None:
        self.cli = cli
        self.home = home
        self.workdir = home / "project"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": key,
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }

    def run(self, prompt: str, *args: str, timeout: float = RUN_TIMEOUT) -> Run:
        started = time.monotonic()
        done = subprocess.run(
            [str(self.cli), "-p", prompt, "--output-format", "json", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        seconds = time.monotonic() - started
        try:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise AssertionError(
                f"claude printed no JSON result (exit {done.returncode}): {done.stderr[-2000:]}"
            ) from None
        return Run(done.returncode, result, seconds, done.stderr)
