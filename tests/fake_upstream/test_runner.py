"""Ways to run the fake upstream: the background thread, the command line, and stopping with open connections."""

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.fake_upstream import FakeUpstream, FakeUpstreamThread

REPO = Path(__file__).resolve().parents[2]
REQUEST = b'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 15\r\n\r\n{"messages":[]}'


def test_thread_runner_serves_synchronous_clients_and_stops() -> None:
    with FakeUpstreamThread() as fake:
        fake.enqueue({"content": "queued"})
        fake.set_named("n", {"content": "named"})
        with httpx.Client(base_url=fake.url, timeout=5.0) as http:
            first = http.post("/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "a"}]})
            second = http.post("/chat/completions", json={"messages": [{"role": "user", "content": "#script:n"}]})
        assert first.json()["choices"][0]["message"]["content"] == "queued"
        assert second.json()["choices"][0]["message"]["content"] == "named"
        assert [r["body"]["messages"][0]["content"] for r in fake.requests] == ["a", "#script:n"]
        fake.reset()
        assert fake.requests == []
        port = fake.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2.0)


def test_thread_runner_reports_a_port_that_is_taken() -> None:
    with FakeUpstreamThread() as taken:
        runner = FakeUpstreamThread(port=taken.port)
        with pytest.raises(RuntimeError, match="failed to start"):
            runner.start()


def test_thread_runner_stops_while_a_request_hangs() -> None:
    with FakeUpstreamThread() as fake, socket.create_connection(("127.0.0.1", fake.port), timeout=5.0) as client:
        fake.enqueue({"hang": True})
        client.sendall(REQUEST)
        for _ in range(200):
            if fake.requests:
                break
            time.sleep(0.01)
        assert fake.requests
        fake.stop()
        assert client.recv(1024) == b""


async def test_stop_closes_open_keep_alive_connections() -> None:
    async with FakeUpstream() as fake:
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(REQUEST)
        await reader.readuntil(b"\r\n\r\n")
    try:
        remaining = await asyncio.wait_for(reader.read(), timeout=2.0)
    finally:
        writer.close()
        await writer.wait_closed()
    assert remaining.endswith(b"}")


def test_command_line_prints_the_url_and_exits_on_sigterm() -> None:
    command = [sys.executable, "-m", "app.fake_upstream", "--port", "0", "--echo"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith("/v1")
            body = {"model": "m", "messages": [{"role": "user", "content": "ping"}]}
            answer = httpx.post(f"{url}/chat/completions", json=body, timeout=5.0).json()
            assert answer["choices"][0]["message"]["content"] == "Seedgate demo: you said: ping"
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
