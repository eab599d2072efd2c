"""`python -m app.fake_upstream [--host H] [--port P] [--echo] [--no-record]`.

Runs the fake upstream until SIGINT or SIGTERM. The first stdout line is the base URL
(`http://H:P/v1`), so a parent process started with `--port 0` can read where it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from app.fake_upstream.server import FakeUpstream


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.fake_upstream", description="Scriptable fake OpenAI upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--echo", action="store_true", help="default answer echoes the last user text (demo mode)")
    parser.add_argument("--no-record", action="store_true", help="do not record requests (long benchmarks)")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    upstream = FakeUpstream(args.host, args.port, echo=args.echo, record_requests=not args.no_record)
    await upstream.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sys.stdout.write(upstream.url + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await upstream.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_run(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
