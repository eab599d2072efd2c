"""`python bench/run.py`: the whole benchmark matrix in one command, printed as Markdown.

Rules this module owns:

- The fake upstream and this process (the load generator) are pinned to `--load-core` (default 1);
  each system under test is pinned to `--gateway-core` (default 0) and runs alone there: systems are
  started one after another, never side by side on the gateway core.
- Everything listens on 127.0.0.1 and lives in a fresh work directory (SQLite file, configs, logs),
  removed at the end unless `--keep`. Every process this run started is stopped, even on error.
- `--rounds N` measures each selected case N times on the same started system, interleaved (round 1 runs
  every case, then round 2 every case again, each round starting one case later; `bench.cases.schedule`);
  each measured run keeps its own warm-up. The table shows each case's median round by CPU ms/req and a
  note per case lists every round (`bench.report.median_round`). With N=1 the report is a single run's.
- `--soak MINUTES` replaces the matrix by a mixed-load soak of Seedgate; `--profile DIR` adds a py-spy
  recording of Seedgate under one case's load (`--profile-case`, default non-stream; bench/profile.py
  summarises it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py` from anywhere

import uvloop

from bench import report, soak
from bench.cases import Case, Row, matrix, measure, schedule, selected
from bench.procs import Service, rss_mb, thread_cpu
from bench.targets import (
    System,
    direct,
    forwarder_python,
    litellm_available,
    start_forwarder,
    start_litellm,
    start_seedgate,
    start_upstream,
)

REPO = Path(__file__).resolve().parent.parent


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per case (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each case")
    parser.add_argument(
        "--rounds", type=_positive, default=1, help="measure each case N times, interleaved; report the median round"
    )
    parser.add_argument("--open-streams", type=int, default=1000, help="streams held open at once (default 1000)")
    parser.add_argument("--slow-delay", type=float, default=0.5, help="seconds between events of a slow stream")
    parser.add_argument("--with-litellm", action="store_true", help="include the LiteLLM proxy (bench/.venv-litellm)")
    parser.add_argument("--no-forwarder", action="store_true", help="skip the bare aiohttp forwarder")
    parser.add_argument("--systems", default="", help="comma-separated systems to run (default: all available)")
    parser.add_argument(
        "--cases", default="", help="comma-separated case names, NAME@CONCURRENCY for one of its rows (default: all)"
    )
    parser.add_argument("--soak", type=float, metavar="MINUTES", help="run a mixed-load soak of Seedgate instead")
    parser.add_argument("--sample-interval", type=float, default=30.0, help="soak sampling period in seconds")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="also record Seedgate with py-spy into DIR")
    parser.add_argument("--profile-concurrency", type=int, default=16, help="concurrency of the profiled run")
    parser.add_argument(
        "--profile-case", default="non-stream", help="case of the profiled run (a name of the matrix, e.g. stream-20)"
    )
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native (slower, shows C frames)")
    parser.add_argument("--source", type=Path, default=REPO, help="Seedgate source tree to run (default: this repo)")
    parser.add_argument("--gateway-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--output", type=Path, help="also write the Markdown report to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SQLite file)")
    return parser.parse_args(argv)


def _revision(source: Path) -> str:
    try:
        described = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return described.stdout.strip() or "unknown"


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def _starters(args: argparse.Namespace, upstream_url: str, workdir: Path) -> list[tuple[str, Callable[[], System]]]:
    core = args.gateway_core
    starters: list[tuple[str, Callable[[], System]]] = [
        ("seedgate", lambda: start_seedgate(sys.executable, args.source.resolve(), upstream_url, workdir, core))
    ]
    python = forwarder_python()
    if python is not None and not args.no_forwarder:
        starters.append(("forwarder", lambda: start_forwarder(python, upstream_url, workdir, core)))
    if args.with_litellm:
        if litellm_available():
            starters.append(("litellm", lambda: start_litellm(upstream_url, workdir, core)))
        else:
            print(
                "bench: --with-litellm given but bench/.venv-litellm is missing; run bench/litellm/setup.sh",
                file=sys.stderr,
            )
    return starters


async def _cases(
    system: System, cases: list[Case], args: argparse.Namespace, upstream_pid: int
) -> tuple[list[Row], list[str], dict[Case, list[Row]]]:
    """Each served case's median round (the only round when `--rounds 1`), a note per case with several,
    and every round's row per case (in the order they ran)."""
    served = [case for case in cases if case.serves(system.name)]
    rounds: dict[Case, list[Row]] = {case: [] for case in served}
    for number, case in schedule(served, args.rounds):
        which = f" (round {number}/{args.rounds})" if args.rounds > 1 else ""
        print(f"bench: {system.name} {case.name} c={case.concurrency}{which} ...", file=sys.stderr, flush=True)
        row = await measure(system, case, duration=args.duration, warmup=args.warmup, upstream_pid=upstream_pid)
        print(
            f"bench:   {row.result.ok} ok, {row.result.rate:.1f} req/s, {row.cpu_ms_per_request:.3f} CPU ms/req,"
            f" errors {dict(row.result.errors)}",
            file=sys.stderr,
        )
        rounds[case].append(row)
    notes = [report.rounds_note(rounds[case]) for case in served] if args.rounds > 1 else []
    return [report.median_round(rounds[case]) for case in served], notes, rounds


async def _profile(system: System, args: argparse.Namespace, upstream_pid: int) -> str:
    """py-spy recording of Seedgate during one case (non-stream at concurrency 16 unless told otherwise)."""
    args.profile.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    seconds = max(5, int(args.duration) * 2)
    concurrency = args.profile_concurrency
    named = [c for c in matrix(args.open_streams) if c.name == args.profile_case]
    if not named:
        raise SystemExit(f"bench: --profile-case {args.profile_case!r} is not a case of the matrix")
    case = dataclasses.replace(named[0], concurrency=concurrency)
    out = args.profile / f"seedgate-{case.name}-c{concurrency}.txt"
    argv = [py_spy, "record", "--pid", str(system.pid), "--rate", "250", "--duration", str(seconds)]
    # --native: C frames too (uvloop, httptools, sqlite3), which needs the process paused per sample
    argv += ["--native"] if args.profile_native else ["--nonblocking", "--gil"]
    argv += ["--format", "raw", "-o", str(out)]  # raw = collapsed stacks, for bench/profile.py
    spy = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    threads_before = thread_cpu(system.pid)
    try:
        row = await measure(system, case, duration=seconds, warmup=0, upstream_pid=upstream_pid)
    finally:
        async with asyncio.timeout(30):
            await spy.wait()
    threads = {tid: cpu - threads_before.get(tid, 0.0) for tid, cpu in thread_cpu(system.pid).items()}
    main = threads.pop(system.pid, 0.0) * 1000 / max(row.result.ok, 1)
    others = sum(threads.values()) * 1000 / max(row.result.ok, 1)
    return (
        f"py-spy stacks in {out} ({row.result.rate:.1f} req/s while sampled at 250 Hz); CPU per request:"
        f" event-loop thread {main:.3f} ms, other threads {others:.3f} ms"
    )


async def _main(args: argparse.Namespace, workdir: Path) -> str:
    cases = selected(matrix(args.open_streams), args.cases)
    upstream, upstream_url = start_upstream(sys.executable, workdir, args.load_core, args.slow_delay)
    services: list[Service] = [upstream]
    rows: list[Row] = []
    notes: list[str] = []
    seedgate_rounds: dict[Case, list[Row]] = {}
    try:
        if args.soak is not None:
            system = start_seedgate(sys.executable, args.source.resolve(), upstream_url, workdir, args.gateway_core)
            services.append(system.service)
            samples, results = await soak.soak(system, args.soak, args.sample_interval)
            return soak.render(system, args.soak, samples, results)
        systems = {s for s in args.systems.split(",") if s}
        if not systems or "direct" in systems:
            measured, by_round, _ = await _cases(direct(upstream), cases, args, upstream.pid)
            rows += measured
            notes += by_round
        for name, start in _starters(args, upstream_url, workdir):
            if systems and name not in systems:
                continue
            print(f"bench: starting {name}", file=sys.stderr, flush=True)
            system = start()
            services.append(system.service)
            notes.append(f"{name} idle RSS after start: {rss_mb(system.pid):.1f} MB")
            measured, by_round, every_round = await _cases(system, cases, args, upstream.pid)
            rows += measured
            notes += by_round
            if name == "seedgate":
                seedgate_rounds = every_round
            if name == "seedgate" and args.profile is not None:
                notes.append(await _profile(system, args, upstream.pid))
            system.service.stop()
    finally:
        for service in reversed(services):
            service.stop()
    return "\n\n".join(
        [report.table(rows, cases), report.targets(rows, seedgate_rounds), "\n".join(f"- {n}" for n in notes)]
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.load_core is not None:
        os.sched_setaffinity(0, {args.load_core})
    workdir = Path(tempfile.mkdtemp(prefix="seedgate-bench-"))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    try:
        body = uvloop.run(_main(args, workdir))
    finally:
        if args.keep:
            print(f"bench: work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    command = shlex.join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    measured = (
        "" if args.soak is not None else f" Measured {args.duration:g} s per case after {args.warmup:g} s warm-up."
    )
    if args.soak is None and args.rounds > 1:
        measured += (
            f" Each case measured {args.rounds} times, interleaved on one started system; the table shows"
            " each case's round with the median CPU ms/req."
        )
    header = [
        f"Run {started} on {_machine()}.",
        f"Command: `{command}` (Seedgate source: {args.source}, revision {_revision(args.source)})",
        f"Pinning: systems under test on core {args.gateway_core}; load generator and fake upstream on core"
        f" {args.load_core}.{measured}",
    ]
    text = "\n".join(header) + "\n\n" + body + "\n"
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
