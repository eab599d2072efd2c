"""The Grafana dashboard in deploy/ plots only series the gateway exports, and plots every family."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from app.metrics import Metrics
from app.money.tokens import TokenUsage

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "seedgate.json"


def test_the_dashboard_queries_only_exported_series_and_covers_every_family() -> None:
    metrics = Metrics()
    metrics.request("chat.completions", "m", 200, None, 0.1, 0.05)
    metrics.charged("m", TokenUsage(1, 1), 1)
    metrics.upstream_attempt("ark", "200")
    metrics.circuit("ark/m", False)
    metrics.limit_rejected("rpm")
    assert metrics.registry is not None
    exported = set(re.findall(r"^(seedgate_\w+?)(?:\{| )", generate_latest(metrics.registry).decode(), re.M))
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"seedgate_\w+", target["expr"])
    }
    assert queried <= exported, queried - exported
    families = {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in exported}
    assert families == {re.sub(r"_(bucket|count|sum|total)$", "", name) for name in queried}
