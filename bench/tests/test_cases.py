"""Rounds of the matrix interleave the cases, and no case always runs first."""

# ruff: noqa: S101 -- pytest asserts (the repository's per-file ignore covers tests/ only)

from __future__ import annotations

import pytest

from bench.cases import Case, matrix, schedule, selected

A, B, C = Case("non-stream", 16), Case("responses", 16, api="responses"), Case("stream-20", 16, "s20")


def test_one_round_runs_every_case_once_in_order() -> None:
    assert schedule([A, B, C], 1) == [(1, A), (1, B), (1, C)]


def test_each_round_runs_every_case_once_starting_one_case_later() -> None:
    order = schedule([A, B, C], 4)
    assert [case for _, case in order] == [A, B, C, B, C, A, C, A, B, A, B, C]
    assert [number for number, _ in order] == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3


def test_no_cases_make_an_empty_schedule() -> None:
    assert schedule([], 3) == []


def test_a_case_name_selects_every_concurrency_and_name_at_n_only_that_one() -> None:
    cases = matrix(1000)
    assert [(c.name, c.concurrency) for c in selected(cases, "non-stream")] == [
        ("non-stream", 1),
        ("non-stream", 16),
        ("non-stream", 64),
    ]
    chosen = selected(cases, "non-stream@16,responses")
    assert [(c.name, c.concurrency) for c in chosen] == [("non-stream", 16), ("responses", 16)]
    assert selected(cases, "") == cases


def test_a_case_that_does_not_exist_stops_the_run_instead_of_running_nothing() -> None:
    with pytest.raises(SystemExit, match="non-stream@2"):
        selected(matrix(1000), "non-stream@2,responses")
