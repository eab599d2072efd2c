"""The serving process tunes the cyclic garbage collector once its application has started.

Run in a child interpreter: freezing this test process's objects would keep every application the
other tests create alive for good.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from app.server import GC_THRESHOLDS

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json, socket
    import uvicorn
    from app.server import DrainingServer

    started = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    started.append((gc.get_freeze_count(), gc.get_threshold()))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = DrainingServer(uvicorn.Config(app, lifespan="on", log_config=None))
        server.config.load()
        server.lifespan = server.config.lifespan_class(server.config)
        await server.startup(sockets=[sock])
        after = (gc.get_freeze_count(), gc.get_threshold())
        server.should_exit = True
        await server.shutdown(sockets=[sock])
        print(json.dumps({"during_startup": started[0], "after_startup": after}))

    asyncio.run(main())
    """
)


def test_the_collector_is_tuned_only_once_the_application_has_started() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    frozen_during, threshold_during = seen["during_startup"]
    frozen_after, threshold_after = seen["after_startup"]
    assert frozen_during == 0
    assert tuple(threshold_during) != GC_THRESHOLDS
    assert frozen_after > 1000, "the objects built at start-up were not frozen out of the collector's scans"
    assert tuple(threshold_after) == GC_THRESHOLDS
