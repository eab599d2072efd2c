"""`python bench/profile.py STACKS.txt`: where a py-spy recording of the gateway spent its CPU.

Input is py-spy's `--format raw` output (collapsed stacks: `root;...;leaf COUNT`, idle samples excluded),
as written by `bench/run.py --profile DIR`. Rules this module owns:

- Self time goes to a component: walk each stack from the leaf up, skip generic plumbing frames (asyncio,
  contextlib, functools, threading...), and the first remaining frame's file decides the component
  (aiohttp, SQLAlchemy, FastAPI/Starlette, uvicorn, logging, pydantic, or the `app.` module itself).
  A stack of plumbing only is "event loop / stdlib"; one whose leaf-most real frame is `asyncio.Runner.run`
  is the event loop's own C code (uvloop polling, socket I/O, scheduling), not any callback's.
- Inclusive time of a function counts each sample once, however often the function recurs in it.
- Percentages are of all non-idle samples, i.e. of the gateway's CPU while it was recorded.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_GENERIC = (
    "asyncio/",
    "contextlib.py",
    "functools.py",
    "threading.py",
    "typing.py",
    "abc.py",
    "enum.py",
    "weakref.py",
    "queue.py",
    "concurrent/",
    "<frozen",
    "runners.py",
)
_COMPONENTS = (
    ("aiohttp", "upstream client (aiohttp)"),
    ("yarl", "upstream client (aiohttp)"),
    ("multidict", "upstream client (aiohttp)"),
    ("httpx", "upstream client (httpx)"),
    ("httpcore", "upstream client (httpx)"),
    ("sqlalchemy", "database: SQLAlchemy"),
    ("aiosqlite", "database: aiosqlite thread + sqlite3"),
    ("sqlite3", "database: aiosqlite thread + sqlite3"),
    ("asyncpg", "database: asyncpg"),
    ("fastapi", "FastAPI (routing, dependencies, validation)"),
    ("starlette", "Starlette (requests, responses, middleware)"),
    ("uvicorn", "uvicorn + httptools (HTTP server)"),
    ("anyio", "anyio (thread pool, streams)"),
    ("pydantic", "pydantic"),
    ("logging", "logging"),
    ("json", "json (stdlib)"),
    ("uuid", "uuid"),
    ("datetime", "datetime"),
    ("secrets", "secrets / random ids"),
    ("random", "secrets / random ids"),
    ("hashlib", "hashlib"),
)


_LOOP = "event loop itself (uvloop C code: polling, I/O, scheduling)"


def _parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    return (match.group("func"), match.group("file")) if match else (frame, "")


def component(file: str) -> str | None:
    """The component a frame's file belongs to, or None for generic plumbing."""
    if any(marker in file for marker in _GENERIC):
        return None
    if file.startswith("app/") or "/app/" in file:
        return "app." + file.rsplit("app/", 1)[1].removesuffix(".py").replace("/", ".")
    head = file.split("/", 1)[0].removesuffix(".py")
    for name, label in _COMPONENTS:
        if head == name or head.startswith(name + "_"):
            return label
    return f"other: {head}"


def load(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([_parse_frame(f) for f in stack.split(";")], int(count)))
    return stacks


def summarise(stacks: list[tuple[list[tuple[str, str]], int]], top: int) -> str:
    total = sum(count for _, count in stacks) or 1
    by_component: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        owner = "event loop / stdlib"
        for _func, file in reversed(frames):
            if file.endswith("asyncio/runners.py"):
                owner = _LOOP  # the sample is inside the loop's C code, not in any callback
                break
            found = component(file)
            if found is not None:
                owner = found
                break
        by_component[owner] += count
        func, file = frames[-1]
        leaves[f"{func} ({file})"] += count
        for name in {f"{func} ({file})" for func, file in frames if component(file) is not None}:
            inclusive[name] += count

    def block(title: str, counter: Counter[str], limit: int) -> list[str]:
        lines = [f"### {title}", "", "| % of CPU | samples | where |", "|---|---|---|"]
        lines += [f"| {100 * n / total:.1f} | {n} | {name} |" for name, n in counter.most_common(limit)]
        return [*lines, ""]

    out = [f"{total} non-idle samples.", ""]
    out += block("Self time by component (leaf-most non-plumbing frame)", by_component, 30)
    out += block("Inclusive time by function", inclusive, top)
    out += block("Self time by leaf frame", leaves, top)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/profile.py", description=__doc__.split("\n")[0])
    parser.add_argument("stacks", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    print(summarise(load(args.stacks), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
