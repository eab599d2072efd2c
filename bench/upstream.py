"""The benchmark's upstream: `app.fake_upstream` on uvloop, with the benchmark's named scripts preloaded.

`python -m bench.upstream --port P [--slow-delay S]` prints its base URL on the first stdout line and
serves until SIGTERM. Requests are not recorded (a long run must stay bounded in memory). A message
containing `#script:NAME` picks one of the scripts below; anything else gets the default short answer.

- `s20`: a stream of 20 content chunks (plus role, finish, usage and [DONE] events), no delay.
- `paced`: the same with 5 ms between events, like a real model's token pacing.
- `slow`: the same with `--slow-delay` seconds between events, to hold many streams open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop

from app.fake_upstream import FakeUpstream, Script

CHUNKS = 20
PACED_DELAY = 0.005


def _stream_script(event_delay: float) -> Script:
    return Script(content_chunks=[f"word{i} " for i in range(CHUNKS)], event_delay=event_delay)


async def _serve(host: str, port: int, slow_delay: float) -> None:
    upstream = FakeUpstream(host, port, record_requests=False)
    upstream.set_named("s20", _stream_script(0.0))
    upstream.set_named("paced", _stream_script(PACED_DELAY))
    upstream.set_named("slow", _stream_script(slow_delay))
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
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--slow-delay", type=float, default=0.5, help="seconds between events of `slow`")
    args = parser.parse_args(argv)
    uvloop.run(_serve(args.host, args.port, args.slow_delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
