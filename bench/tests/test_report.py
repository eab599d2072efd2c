"""The report picks a measured round, never an average, and judges Responses' CPU against chat's with 3 % room."""

# ruff: noqa: S101 -- pytest asserts (the repository's per-file ignore covers tests/ only)

from __future__ import annotations

from collections import Counter

import pytest

from bench.cases import Case, Row
from bench.loadgen import Result
from bench.report import cpu_ratio, median_round, paired_cpu_ratio, rounds_note, targets

NON_STREAM = Case("non-stream", 16)
RESPONSES = Case("responses", 16, api="responses")
STREAM = Case("stream-20", 16, "s20")
RESPONSES_STREAM = Case("responses-stream-20", 16, "s20", api="responses")


def _row(case: Case, cpu_ms: float, *, ok: int = 100, system: str = "seedgate", errors: int = 0) -> Row:
    result = Result(latencies=[0.002] * ok, errors=Counter({"http_500": errors} if errors else {}), elapsed=1.0)
    return Row(system, case, result, cpu_seconds=cpu_ms * ok / 1000, peak_rss_mb=50.0)


def _line(table: str, figure: str) -> list[str]:
    [line] = [line for line in table.splitlines() if line.startswith(f"| {figure} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_median_round_is_a_measured_row_not_an_average() -> None:
    rounds = [_row(NON_STREAM, 0.331), _row(NON_STREAM, 0.322), _row(NON_STREAM, 0.340)]
    assert median_round(rounds) is rounds[0]


def test_an_even_number_of_rounds_takes_the_lower_middle_round() -> None:
    rounds = [_row(NON_STREAM, 0.40), _row(NON_STREAM, 0.30), _row(NON_STREAM, 0.35), _row(NON_STREAM, 0.20)]
    assert median_round(rounds) is rounds[1]


def test_a_single_round_is_its_own_median() -> None:
    only = _row(NON_STREAM, 0.5)
    assert median_round([only]) is only


def test_the_rounds_note_lists_every_round_in_the_order_they_ran() -> None:
    rounds = [_row(NON_STREAM, 0.331), _row(NON_STREAM, 0.322), _row(NON_STREAM, 0.340)]
    assert rounds_note(rounds) == "seedgate non-stream c=16 CPU ms/req by round: 0.331 0.322 0.340 (median 0.331)"


def test_the_rounds_note_names_errors_of_rounds_the_table_does_not_show() -> None:
    rounds = [_row(NON_STREAM, 0.3), _row(NON_STREAM, 0.9, errors=2), _row(NON_STREAM, 0.4)]
    assert rounds_note(rounds).endswith("(median 0.400); errors in round 2 {'http_500': 2}")


def test_responses_at_most_three_percent_above_chat_is_met() -> None:
    rows = [_row(NON_STREAM, 0.300), _row(RESPONSES, 0.306), _row(STREAM, 0.800), _row(RESPONSES_STREAM, 0.760)]
    text = targets(rows)
    assert _line(text, "Responses CPU ms/req vs chat, non-stream c=16")[1:] == [
        "1.020 (0.306 vs 0.300 ms)",
        "<= 1.0 x (within 3 % noise)",
        "met",
    ]
    assert _line(text, "Responses CPU ms/req vs chat, stream-20 c=16")[1:] == [
        "0.950 (0.760 vs 0.800 ms)",
        "<= 1.0 x (within 3 % noise)",
        "met",
    ]


def test_responses_more_than_three_percent_above_chat_is_not_met() -> None:
    rows = [_row(NON_STREAM, 0.300), _row(RESPONSES, 0.330), _row(STREAM, 0.800), _row(RESPONSES_STREAM, 0.850)]
    text = targets(rows)
    assert _line(text, "Responses CPU ms/req vs chat, non-stream c=16")[1:3] == [
        "1.100 (0.330 vs 0.300 ms)",
        "<= 1.0 x (within 3 % noise)",
    ]
    assert _line(text, "Responses CPU ms/req vs chat, non-stream c=16")[3] == "NOT met"
    assert _line(text, "Responses CPU ms/req vs chat, stream-20 c=16")[3] == "NOT met"


def test_responses_against_chat_is_not_applicable_when_a_row_is_missing() -> None:
    text = targets([_row(NON_STREAM, 0.300), _row(RESPONSES_STREAM, 0.700)])
    assert _line(text, "Responses CPU ms/req vs chat, non-stream c=16")[1:] == [
        "",
        "<= 1.0 x (within 3 % noise)",
        "n/a",
    ]
    assert _line(text, "Responses CPU ms/req vs chat, stream-20 c=16")[1:] == ["", "<= 1.0 x (within 3 % noise)", "n/a"]


def test_a_row_without_successful_requests_cannot_be_compared() -> None:
    assert cpu_ratio(_row(RESPONSES, 0.3), _row(NON_STREAM, 0.3, ok=0)) is None
    assert cpu_ratio(_row(RESPONSES, 0.3, ok=0), _row(NON_STREAM, 0.3)) is None
    assert cpu_ratio(None, _row(NON_STREAM, 0.3)) is None


def test_only_seedgate_rows_are_judged() -> None:
    rows = [_row(NON_STREAM, 0.3), _row(RESPONSES, 0.2, system="direct")]
    assert _line(targets(rows), "Responses CPU ms/req vs chat, non-stream c=16")[3] == "n/a"


def test_with_rounds_the_verdict_is_the_median_of_per_round_ratios_not_of_the_median_rows() -> None:
    # the machine slowed down in round 3 for both cases: per round Responses is 1 % dearer every time,
    # while the median rows alone (0.330 vs 0.310) would say 6.5 %
    chat = [_row(NON_STREAM, cpu) for cpu in (0.300, 0.310, 0.400, 0.305, 0.320)]
    twin = [_row(RESPONSES, cpu * 1.01) for cpu in (0.300, 0.310, 0.400, 0.305, 0.320)]
    twin[1] = _row(RESPONSES, 0.330)
    assert paired_cpu_ratio(twin, chat) == pytest.approx(1.01)
    rows = [median_round(chat), median_round(twin)]
    line = _line(targets(rows, {NON_STREAM: chat, RESPONSES: twin}), "Responses CPU ms/req vs chat, non-stream c=16")
    assert line[1].startswith("1.010 (median of 5 per-round ratios; median rounds ")
    assert line[3] == "met"


def test_per_round_ratios_skip_rounds_without_successful_requests() -> None:
    chat = [_row(NON_STREAM, 0.3), _row(NON_STREAM, 0.3, ok=0), _row(NON_STREAM, 0.3)]
    twin = [_row(RESPONSES, 0.33), _row(RESPONSES, 0.1), _row(RESPONSES, 0.36)]
    assert paired_cpu_ratio(twin, chat) == pytest.approx(1.15)
    assert paired_cpu_ratio([], chat) is None
