"""The benchmark matrix and how one case is measured against one system.

Rules this module owns:

- Every case runs a short warm-up (connections opened, caches filled, not counted), then the measured
  closed-loop run. The server's CPU seconds and peak RSS cover only the measured run.
- With several rounds (`schedule`), the cases are measured interleaved on the same server: round 1 runs
  every case in order, round 2 every case again, and so on, each round starting one case later (round 2
  starts at the second case), so drift of the machine or the server spreads over all cases alike and no
  case always comes first after the server starts.
- Non-stream requests get the upstream's default short answer; stream cases pick a named upstream
  script (`bench.upstream`) by a `#script:NAME` marker in the message, so every system relays the very
  same upstream behaviour. Streams always ask for `stream_options.include_usage`.
- The `responses` cases ask Seedgate's `POST /v1/responses` (`store: false`) for the very same answers
  as their chat twins, so the CPU per request of the translation shows next to chat's; only Seedgate
  serves them (``serves``).
- The open-streams case holds `open_streams` slow streams at once (connects spread over two seconds,
  each stream ~11 s long), one request per connection, and reports peak RSS while they are open.
- The machine is shared, so every run also reports how many cores processes outside the benchmark
  (not the server, the upstream or the load generator) kept busy meanwhile: figures taken while that
  is high are noise, and say so.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from bench.loadgen import Job, Result, build_request, percentile, run
from bench.procs import RssSampler, cpu_seconds, machine_busy, own_cpu, peak_rss_mb, reset_peak_rss
from bench.targets import System

MAX_REQUESTS = 500_000  # per measured run; far above what a few seconds can reach, but a bound
OPEN_STAGGER = 2.0


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    concurrency: int
    script: str | None = None  # None: non-stream default answer
    open_streams: bool = False
    api: str = "chat"  # "chat" (/v1/chat/completions) or "responses" (/v1/responses)

    @property
    def stream(self) -> bool:
        return self.script is not None

    def serves(self, system: str) -> bool:
        return self.api == "chat" or system == "seedgate"


def matrix(open_streams: int) -> list[Case]:
    return [
        Case("non-stream", 1),
        Case("non-stream", 16),
        Case("non-stream", 64),
        Case("stream-20", 1, "s20"),
        Case("stream-20", 16, "s20"),
        Case("responses", 16, api="responses"),
        Case("responses-stream-20", 16, "s20", api="responses"),
        Case("paced-5ms", 16, "paced"),
        Case("open-streams", open_streams, "slow", open_streams=True),
    ]


def schedule(cases: list[Case], rounds: int) -> list[tuple[int, Case]]:
    """The interleaved order of `rounds` measured runs of each case: (round number from 1, case) pairs."""
    order: list[tuple[int, Case]] = []
    for number in range(rounds):
        start = number % len(cases) if cases else 0
        order += [(number + 1, case) for case in cases[start:] + cases[:start]]
    return order


def selected(cases: list[Case], wanted: str) -> list[Case]:
    """The cases a ``--cases`` list names: ``NAME`` is every concurrency of that case, ``NAME@N`` only N's.

    An empty list is every case; a name that matches nothing is an error, not an empty run.
    """
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    if not names:
        return cases
    chosen = []
    for case in cases:
        if case.name in names or f"{case.name}@{case.concurrency}" in names:
            chosen.append(case)
    unknown = [n for n in names if not any(n in (c.name, f"{c.name}@{c.concurrency}") for c in cases)]
    if unknown:
        raise SystemExit(f"bench: no such case: {', '.join(unknown)}")
    return chosen


def request_for(system: System, case: Case) -> bytes:
    text = "Say hello in a few words."
    if case.api == "responses":
        if case.script is not None:
            text += f" #script:{case.script}"
        fields = {"model": system.model, "max_output_tokens": 64, "store": False, "stream": case.stream, "input": text}
        return build_request("127.0.0.1", system.port, "/v1/responses", json.dumps(fields).encode(), system.headers)
    body: dict[str, object] = {"model": system.model, "max_tokens": 64}
    if case.script is not None:
        text += f" #script:{case.script}"
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body["messages"] = [{"role": "user", "content": text}]
    return build_request("127.0.0.1", system.port, "/v1/chat/completions", json.dumps(body).encode(), system.headers)


@dataclass(slots=True)
class Row:
    """One line of the table; times in milliseconds."""

    system: str
    case: Case
    result: Result
    cpu_seconds: float
    peak_rss_mb: float
    foreign_cores: float = 0.0  # cores kept busy by processes outside this benchmark during the run

    def _ms(self, values: list[float], fraction: float) -> float:
        return percentile(values, fraction) * 1000

    def latency(self, fraction: float) -> float:
        return self._ms(self.result.latencies, fraction)

    def ttfb(self, fraction: float) -> float:
        return self._ms(self.result.ttfb, fraction)

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1000 / self.result.ok if self.result.ok else 0.0

    @property
    def events_per_request(self) -> float:
        return self.result.events / self.result.ok if self.result.ok else 0.0


def _job(system: System, case: Case, duration: float, timeout: float) -> Job:
    request = request_for(system, case)
    if case.open_streams:
        return Job(
            "127.0.0.1",
            system.port,
            request,
            True,
            case.concurrency,
            duration=OPEN_STAGGER + 1,
            max_requests=case.concurrency,
            timeout=timeout,
            connect_stagger=OPEN_STAGGER,
        )
    return Job("127.0.0.1", system.port, request, case.stream, case.concurrency, duration, MAX_REQUESTS, timeout)


async def measure(
    system: System, case: Case, *, duration: float, warmup: float, upstream_pid: int, answer_timeout: float = 60.0
) -> Row:
    if warmup > 0:
        # the open-streams case warms up on fast streams: a slow one would outlast the warm-up tenfold
        script = "s20" if case.open_streams else case.script
        warm = dataclasses.replace(case, concurrency=min(case.concurrency, 64), script=script, open_streams=False)
        await run(_job(system, warm, warmup, answer_timeout))  # the same API: Responses cases warm Responses
    job = _job(system, case, duration, answer_timeout)
    reset_peak_rss(system.pid)
    pids = sorted({system.pid, upstream_pid})
    before = [cpu_seconds(system.pid), *(cpu_seconds(p) for p in pids), own_cpu(), machine_busy()]
    async with RssSampler(system.pid) as sampler:
        result = await run(job)
    after = [cpu_seconds(system.pid), *(cpu_seconds(p) for p in pids), own_cpu(), machine_busy()]
    delta = [b - a for a, b in zip(before, after, strict=True)]
    foreign = max(0.0, delta[-1] - sum(delta[1:-1])) / result.elapsed if result.elapsed else 0.0
    return Row(system.name, case, result, delta[0], max(sampler.peak, peak_rss_mb(system.pid)), foreign)
