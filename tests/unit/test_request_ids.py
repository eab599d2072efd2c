"""Request ids: unique, fixed-shape, and ordered by time (so the ``request_id`` indexes grow at one end)."""

from __future__ import annotations

import re
import time

from app.asgi import new_request_id


def test_request_ids_are_unique_and_keep_their_shape() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", request_id) for request_id in ids)


def test_a_later_request_id_sorts_after_an_earlier_one() -> None:
    earlier = [new_request_id() for _ in range(100)]
    time.sleep(0.002)
    later = [new_request_id() for _ in range(100)]
    assert max(earlier) < min(later)


def test_the_id_starts_with_the_milliseconds_since_the_epoch() -> None:
    before = time.time_ns() // 1_000_000
    request_id = new_request_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(request_id[4:16], 16) <= after
