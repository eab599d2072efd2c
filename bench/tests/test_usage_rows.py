"""The usage-at-scale bench builds a loadable database whose rollups match its raw rows, and times it."""

# ruff: noqa: S101 -- pytest asserts (the repository's per-file ignore covers tests/ only)

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "usage_rows.py"


def test_a_small_sqlite_run_prints_every_query_and_its_rollups_match_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "3000", "--keys", "20", "--days", "5", "--repeat", "1",
         "--backend", "sqlite", "--keep", str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "3,000 raw usage rows" in run.stdout
    assert run.stdout.count(" ms ") >= 7, run.stdout
    with sqlite3.connect(path) as conn:
        raw = conn.execute("SELECT COUNT(*), SUM(cost), SUM(prompt_tokens) FROM usage").fetchone()
        rolled = conn.execute("SELECT SUM(requests), SUM(cost), SUM(prompt_tokens) FROM usage_daily").fetchone()
        days = conn.execute("SELECT COUNT(DISTINCT day) FROM usage_daily").fetchone()
    assert raw == rolled
    assert raw[0] == 3000
    assert days == (5,)
