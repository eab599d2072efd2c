"""The bare forwarder: the floor a Python gateway is measured against.

It checks one key, maps the model name and relays bytes with aiohttp (server and client) on uvloop,
and does nothing else: no limits, no money, no database, no logging. It runs on any interpreter that has
aiohttp and uvloop (Seedgate's .venv, or `bench/.venv-litellm` from `bench/litellm/setup.sh`).

    python bench/forwarder.py --port P --upstream URL --key K --model NAME=UPSTREAM_NAME
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import uvloop
from aiohttp import ClientSession, TCPConnector, web


class Forwarder:
    def __init__(self, upstream: str, key: str, upstream_key: str, models: dict[str, str]) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.auth = f"Bearer {key}"
        self.headers = {"Authorization": f"Bearer {upstream_key}", "Content-Type": "application/json"}
        self.models = models
        self.session: Any = None

    async def open(self, _app: Any) -> None:
        self.session = ClientSession(connector=TCPConnector(limit=2000))

    async def close(self, _app: Any) -> None:
        await self.session.close()

    async def health(self, _request: Any) -> Any:
        return web.Response(text="ok")

    async def chat(self, request: Any) -> Any:
        if request.headers.get("Authorization") != self.auth:
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = json.loads(await request.read())
        target = self.models.get(body.get("model"))
        if target is None:
            return web.json_response({"error": {"message": "unknown model"}}, status=404)
        body["model"] = target
        async with self.session.post(self.url, data=json.dumps(body).encode(), headers=self.headers) as upstream:
            if not body.get("stream"):
                raw = await upstream.read()
                return web.Response(body=raw, status=upstream.status, content_type="application/json")
            response = web.StreamResponse(status=upstream.status, headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/forwarder.py", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="upstream base URL, e.g. http://127.0.0.1:9100/v1")
    parser.add_argument("--key", required=True, help="the one key clients must send")
    parser.add_argument("--upstream-key", default="bench-upstream-key")
    parser.add_argument("--model", action="append", default=[], help="NAME=UPSTREAM_NAME (repeatable)")
    args = parser.parse_args(argv)
    models = dict(item.split("=", 1) for item in args.model)
    forwarder = Forwarder(args.upstream, args.key, args.upstream_key, models)
    app = web.Application()
    app.on_startup.append(forwarder.open)
    app.on_cleanup.append(forwarder.close)
    app.router.add_get("/health", forwarder.health)
    app.router.add_post("/v1/chat/completions", forwarder.chat)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
