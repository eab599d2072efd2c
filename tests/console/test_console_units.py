"""The console's pure parts: SVG charts, money display, the webhook signature and its back-off."""

from __future__ import annotations

import hashlib
import hmac
import re

from app.alerts import backoff, sign
from app.console.charts import bars
from app.console.render import usd
from app.settings import AlertsSettings


def test_bars_are_proportional_and_every_label_is_escaped() -> None:
    svg = str(bars(["<a>", "b"], [1, 4], title="x<script>"))
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([0-9.]+)"', svg)]
    assert heights[1] == 4 * heights[0]
    assert "<script>" not in svg
    assert "<a>" not in svg
    assert "&lt;a&gt;" in svg


def test_an_empty_chart_draws_zero_height_bars_not_an_error() -> None:
    svg = str(bars(["a", "b"], [0, 0], title="nothing yet"))
    assert re.findall(r'height="([0-9.]+)" data-value', svg) == ["0.0", "0.0"]


def test_money_shows_cents_at_least_and_small_amounts_exactly() -> None:
    assert usd("3") == "$3.00"
    assert usd("2.999983") == "$3.00"
    assert usd("0.000017", 6) == "$0.000017"
    assert usd("1234.5") == "$1,234.50"


def test_webhook_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("secret", "1700000000", b"{}") == f"sha256={expected}"


def test_retries_back_off_exponentially_and_are_capped() -> None:
    settings = AlertsSettings(first_retry_seconds=1)
    assert [backoff(settings, n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(settings, 30) == 3600
