"""The metrics module alone: scrape access rules, dead workers' gauges, cached label children."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from app.errors import AuthenticationFailed
from app.metrics import Metrics, prepare_workers
from app.metrics.exposition import ScrapeAccess, ScrapeForbidden, forget_dead_workers
from app.money.tokens import TokenUsage


def test_scrape_access_takes_the_token_from_anywhere_or_else_only_allowed_addresses() -> None:
    with_token = ScrapeAccess("t0ken-0123456789", ["127.0.0.1"])
    with_token.check("t0ken-0123456789", "203.0.113.9")
    for bearer, client in ((None, "127.0.0.1"), ("wrong", "127.0.0.1")):
        with pytest.raises(AuthenticationFailed):
            with_token.check(bearer, client)
    allow = ScrapeAccess(None, ["127.0.0.1", "::1", "10.1.0.0/16"])
    for client in ("127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3"):
        allow.check(None, client)
    for client in ("10.2.0.1", "203.0.113.9", "-", "not-an-ip"):
        with pytest.raises(ScrapeForbidden):
            allow.check("anything", client)


def test_a_dead_workers_live_gauges_are_dropped_and_its_counters_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    pid = int(dead.stdout)
    for name in (f"gauge_livesum_{pid}.db", f"gauge_livemax_{pid}.db", f"counter_{pid}.db"):
        (tmp_path / name).write_bytes(b"")
    forget_dead_workers(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{pid}.db"]


def test_recorded_figures_reach_the_exposition_with_bounded_labels() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.request("chat.completions", "m", 200, None, 0.2, 0.05)
    metrics.request("/admin/keys/{key_id}", None, 404, "not_found", 0.001, None)
    metrics.charged("m", TokenUsage(prompt_tokens=10, completion_tokens=4, reasoning_tokens=1), 2_500_000_000)
    metrics.limit_rejected("rpm")
    text = generate_latest(metrics.registry).decode() if metrics.registry else ""
    assert 'seedgate_requests_total{code="",endpoint="chat.completions",model="m",status="200"} 3.0' in text
    assert 'seedgate_requests_total{code="not_found",endpoint="/admin/keys/{key_id}",model="",status="404"} 1.0' in text
    assert 'seedgate_time_to_first_token_seconds_count{endpoint="chat.completions",model="m"} 3.0' in text
    assert 'seedgate_tokens_total{kind="reasoning",model="m"} 1.0' in text
    assert 'seedgate_tokens_total{kind="cached"' not in text  # a zero count adds no series
    assert 'seedgate_spend_usd_total{model="m"} 0.0025' in text
    assert 'seedgate_limit_rejections_total{kind="rpm"} 1.0' in text


def test_the_shared_directory_is_made_for_workers_and_emptied_when_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert prepare_workers(1) is None
    made = prepare_workers(2)
    assert os.environ.pop("PROMETHEUS_MULTIPROC_DIR") == made  # set for the workers to come
    assert made is not None
    assert Path(made).is_dir()
    (tmp_path / "counter_1.db").write_bytes(b"stale")
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert prepare_workers(1) == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
