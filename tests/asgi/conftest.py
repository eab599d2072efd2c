"""The pipeline in process: a ``Harness`` per test on its own SQLite file, upstream on the transport seam."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests.support.inprocess import Harness, inprocess_settings

MakeHarness = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
def make_harness(tmp_path: Path) -> MakeHarness:
    counter = iter(range(1000))

    def make(overrides: dict[str, Any] | None = None) -> Harness:
        return Harness(inprocess_settings(tmp_path / f"seedgate-{next(counter)}.db", overrides))

    return make


@pytest.fixture
async def harness(make_harness: MakeHarness) -> AsyncIterator[Harness]:
    async with make_harness() as started:
        yield started
