"""Benchmark processes: start them pinned to a core, wait until they answer, read their /proc figures.

Rules this module owns:

- Every process is started through `taskset -c CORE` (which execs, so the PID is the server's own) and
  listens on 127.0.0.1 only; its output goes to a log file in the run's work directory.
- Readiness is polled with a bounded deadline; a process that exits or never answers raises with the
  tail of its log, so a broken gateway fails the run loudly instead of producing a table of errors.
- CPU is utime + stime from `/proc/PID/stat` (all threads) summed over the process and its
  descendants, in seconds; RSS and fds are summed the same way. Peak RSS is VmHWM, reset per
  case by writing 5 to `/proc/PID/clear_refs`; `RssSampler` also samples VmRSS as a cross-check.
- `stop` sends SIGTERM and waits a bounded time, then SIGKILL: only processes this run started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(core: int | None, argv: list[str]) -> list[str]:
    """`argv` under `taskset -c core` when taskset exists and a core is asked for."""
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(core), *argv]


@dataclass
class Service:
    """One started process with a health URL."""

    name: str
    argv: list[str]
    log_path: Path
    health_url: str
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Service:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if http_ok(self.health_url):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {self.health_url} within {timeout} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 -- loopback URL we built
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants (a server that forks workers is measured whole)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry)] = int(_stat_fields(int(entry))[1])
    found = [pid]
    for _ in range(64):  # bounded depth
        more = [child for child, parent in parents.items() if parent in found and child not in found]
        if not more:
            break
        found += more
    return found


def cpu_seconds(pid: int) -> float:
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError):
            fields = _stat_fields(member)
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5): utime, stime
    return total / _TICKS


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread of one process (the main thread's id is the pid)."""
    found: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            fields = _task_fields(pid, int(tid))
            found[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return found


def machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


def own_cpu() -> float:
    """CPU seconds of this process (the load generator), all threads."""
    times = os.times()
    return times.user + times.system


def _task_fields(pid: int, tid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _status_kb(pid: int, name: str) -> int:
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(name + ":"):
                    total += int(line.split()[1])
    return total


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> None:
    """Start a new VmHWM period (Linux >= 4.0); harmless where the kernel refuses it."""
    for member in tree(pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{member}/clear_refs").write_text("5")


def open_fds(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{member}/fd")) for member in tree(pid))


class RssSampler:
    """Samples VmRSS of a process every `interval` seconds while a run is in progress."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        for _ in range(10_000_000):
            self.peak = max(self.peak, rss_mb(self.pid))
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak = max(self.peak, rss_mb(self.pid))
