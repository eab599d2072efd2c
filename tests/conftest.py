"""Fixtures shared by every test package: the fake upstream on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.fake_upstream import FakeUpstreamThread


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstreamThread]:
    fake = FakeUpstreamThread()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake(upstream: FakeUpstreamThread) -> Iterator[FakeUpstreamThread]:
    upstream.reset()
    yield upstream
    upstream.reset()
