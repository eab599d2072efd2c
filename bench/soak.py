"""The soak: mixed load for a number of minutes, sampling the server's RSS and open file descriptors.

Rules this module owns:

- The mix runs three closed loops at once for the whole soak: non-stream at concurrency 8, fast
  20-chunk streams at 4 and paced streams at 4. Each is bounded by the soak's deadline and a count.
- RSS and fds are sampled at the start, every `interval` seconds after, and one second before the load
  stops (never after it, when closing connections would skew the count); printed as they come.
- "Flat" is judged from minute 2 to the end (warm-up growth before that is expected): the largest
  sample may exceed the smallest by at most 10%. A soak shorter than 3 minutes judges all samples after
  the first and says so.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

from bench.cases import MAX_REQUESTS, Case, request_for
from bench.loadgen import Job, Result, run
from bench.procs import open_fds, rss_mb
from bench.targets import System

MIX = (Case("non-stream", 8), Case("stream-20", 4, "s20"), Case("paced-5ms", 4, "paced"))
FLAT = 0.10


@dataclass(slots=True)
class Sample:
    seconds: float
    rss_mb: float
    fds: int


async def _sample(pid: int, interval: float, deadline: float, samples: list[Sample]) -> None:
    started = time.monotonic()
    for _ in range(1_000_000):
        sample = Sample(time.monotonic() - started, rss_mb(pid), open_fds(pid))
        samples.append(sample)
        print(f"  t={sample.seconds:6.0f}s  rss={sample.rss_mb:7.1f} MB  fds={sample.fds}", file=sys.stderr, flush=True)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(min(interval, remaining))


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / min(values) if values and min(values) > 0 else 0.0


def verdict(samples: list[Sample]) -> str:
    judged = [s for s in samples if s.seconds >= 120]
    note = "minute 2 to the end"
    if len(judged) < 2:
        judged, note = samples[1:], "all samples after the first (soak shorter than 3 minutes)"
    if len(judged) < 2:
        return "not enough samples to judge flatness"
    rss, fds = _spread([s.rss_mb for s in judged]), _spread([float(s.fds) for s in judged])
    flat = "flat" if rss <= FLAT and fds <= FLAT else "NOT flat"
    return f"{flat} over {note}: RSS spread {rss:.1%}, fd spread {fds:.1%} (limit {FLAT:.0%})"


async def soak(system: System, minutes: float, interval: float) -> tuple[list[Sample], list[tuple[Case, Result]]]:
    duration = minutes * 60
    jobs = [
        Job("127.0.0.1", system.port, request_for(system, c), c.stream, c.concurrency, duration, MAX_REQUESTS * 20)
        for c in MIX
    ]
    samples: list[Sample] = []
    # the last sample is taken just before the load stops, so closing connections are not counted
    sampler = asyncio.create_task(_sample(system.pid, interval, time.monotonic() + max(duration - 1, 0), samples))
    results = await asyncio.gather(*(run(job) for job in jobs))
    await sampler
    return samples, list(zip(MIX, results, strict=True))


def render(system: System, minutes: float, samples: list[Sample], results: list[tuple[Case, Result]]) -> str:
    lines = [f"Soak of {system.name}, {minutes:g} min, mixed load:"]
    for case, result in results:
        errors = sum(result.errors.values())
        lines.append(f"- {case.name} c={case.concurrency}: {result.ok} ok, {errors} errors, {result.rate:.1f} req/s")
    lines.append("")
    lines.append("| t (s) | RSS MB | open fds |")
    lines.append("|---|---|---|")
    lines += [f"| {s.seconds:.0f} | {s.rss_mb:.1f} | {s.fds} |" for s in samples]
    lines += ["", verdict(samples)]
    return "\n".join(lines)
