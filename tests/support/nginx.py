"""A real nginx on a loopback port, running the production ``deploy/nginx.conf``, for the scale-out tests.

Rules owned here:

- The proxy directives are never rewritten: the generated config is ``deploy/nginx.conf`` with only
  what cannot work outside containers replaced -- the upstream ``server`` lines (compose service
  names become loopback gateway ports), the ``listen`` port, and ``worker_processes`` (a fixed small
  count instead of one worker per CPU). If the file changes shape so that a replacement finds nothing
  to replace, rendering fails loudly instead of testing some other config.
- Everything nginx writes (pid, logs, temp files) stays in the test's own prefix directory, and the
  master runs in the foreground (``daemon off``) as our child, in a session of its own, so stopping
  it can never leave workers behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support.gateway import free_port

DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
WORKERS = 2
# Debian installs nginx in /usr/sbin, which is not on every user's PATH
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])

_UPSTREAM_BLOCK = re.compile(r"(upstream\s+seedgate\s*\{)(.*?)(\})", re.S)
_SERVER_LINE = re.compile(r"^[ \t]*server\s+\S+(?P<params>[^;\n]*);[ \t]*\n", re.M)
_LISTEN = re.compile(r"^(?P<indent>[ \t]*)listen\s+[^;\n]+;", re.M)
_WORKER_PROCESSES = re.compile(r"^worker_processes\s+[^;\n]+;", re.M)
_HTTP_OPEN = re.compile(r"^http\s*\{[ \t]*\n", re.M)


class NginxConfigError(AssertionError):
    """``deploy/nginx.conf`` no longer has the shape these tests rewrite."""


def nginx_binary() -> str:
    found = shutil.which("nginx", path=_SEARCH_PATH)
    if found is None:
        raise RuntimeError("nginx is not installed: run `scripts/services start` (it installs the Debian package)")
    return found


def _replace_one(pattern: re.Pattern[str], replacement: Callable[[re.Match[str]], str], text: str, what: str) -> str:
    result, count = pattern.subn(replacement, text)
    if count != 1:
        raise NginxConfigError(f"expected exactly one {what} in {DEPLOY_CONF}, found {count}")
    return result


def render_config(source: str, *, upstreams: Sequence[str], port: int, prefix: Path) -> str:
    """``source`` (the text of deploy/nginx.conf) pointed at ``upstreams`` ("host:port") and listening on
    127.0.0.1:``port``, with every file nginx writes inside ``prefix``."""
    block = _UPSTREAM_BLOCK.search(source)
    if block is None:
        raise NginxConfigError(f"no `upstream seedgate {{ ... }}` block in {DEPLOY_CONF}")
    servers = list(_SERVER_LINE.finditer(block.group(2)))
    if not servers:
        raise NginxConfigError(f"no server lines in the upstream block of {DEPLOY_CONF}")
    params = servers[0].group("params")  # e.g. " max_fails=0": kept, it is part of the contract
    body = _SERVER_LINE.sub("", block.group(2))
    lines = "".join(f"        server {address}{params};\n" for address in upstreams)
    text = source[: block.start(2)] + "\n" + lines + body.lstrip("\n") + source[block.end(2) :]

    listen = f"listen 127.0.0.1:{port};"
    text = _replace_one(_LISTEN, lambda m: m.group("indent") + listen, text, "listen directive")
    workers = f"worker_processes {WORKERS};"
    text = _replace_one(_WORKER_PROCESSES, lambda _: workers, text, "worker_processes directive")
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must reach the root-owned temp prefix
    main = f"{user}pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
    http = "".join(
        f"    {directive} {prefix}/{name};\n"
        for directive, name in (
            ("access_log", "access.log"),
            ("client_body_temp_path", "client_body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        )
    )
    opening = _HTTP_OPEN.search(text)
    if opening is None:
        raise NginxConfigError(f"no top-level `http {{` in {DEPLOY_CONF}")
    return main + text[: opening.end()] + http + text[opening.end() :]


class NginxProcess:
    """nginx in the foreground on 127.0.0.1, proxying to the given gateway addresses."""

    def __init__(self, workdir: Path, upstreams: Sequence[str], *, source: Path = DEPLOY_CONF) -> None:
        self.prefix = workdir / "nginx"
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.conf_path = self.prefix / "nginx.conf"
        self.conf_path.write_text(
            render_config(source.read_text(), upstreams=upstreams, port=self.port, prefix=self.prefix)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self, *extra: str) -> list[str]:
        return [
            nginx_binary(),
            "-p",
            f"{self.prefix}/",
            "-e",
            str(self.prefix / "error.log"),
            "-c",
            str(self.conf_path),
            *extra,
        ]

    def start(self, timeout: float = 10.0) -> NginxProcess:
        check = subprocess.run(self._command("-t"), capture_output=True, timeout=30, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected the generated config:\n{check.stderr.decode(errors='replace')}")
        with (self.prefix / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(
                self._command("-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.logs()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self.port} within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in (self.prefix / "error.log", self.prefix / "stdout.log")
            if path.exists()
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM to the master); if it hangs, kill the whole session it leads."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # our child leads this session: only its workers
            self.proc.wait(5)
