"""``Metrics``: every Prometheus family the gateway exports, and the calls that record them.

Where each is recorded (the natural point, once):

    seedgate_requests_total, _request_duration_seconds      app.asgi (the access record, at the end)
    seedgate_time_to_first_token_seconds                     app.asgi, from the relay's first event
    seedgate_tokens_total, seedgate_spend_usd_total          app.pipeline.settle (charged requests)
    seedgate_upstream_requests_total                         app.routing (every attempt)
    seedgate_upstream_circuit_open                           app.breaker (every state change)
    seedgate_open_streams                                    app.outbound.RelayResponse
    seedgate_holds_outstanding                               app.money.leases (live holds)
    seedgate_limit_rejections_total                          app.limits.checks

Hot-path cost: ``labels()`` hashes and locks on every call, so each label combination's child is
looked up once and kept in a dict keyed by the label tuple (a plain dict lookup per record).
Label values are bounded (see ``app.metrics``): the endpoint of an unrouted path is "unmatched".
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, multiprocess

from app.money.tokens import TokenUsage

UNITS_PER_USD = 10**12
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120)
TOKEN_KINDS = ("prompt", "completion", "cached", "reasoning")


def multiprocess_dir() -> str | None:
    """The shared directory when this process is one of several workers (``app.metrics.workers``)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """One per process (built in ``Services.start``). Single process: a private registry; several
    workers: values go to the shared directory and ``registry`` is None (``exposition`` collects)."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the series count and nothing plots them
        self.multiprocess = multiprocess_dir() is not None
        self.registry: CollectorRegistry | None = None if self.multiprocess else CollectorRegistry()
        reg = self.registry
        self._requests = Counter(
            "seedgate_requests",
            "HTTP requests answered, by endpoint, model, HTTP status and error code",
            ("endpoint", "model", "status", "code"),
            registry=reg,
        )
        self._duration = Histogram(
            "seedgate_request_duration_seconds",
            "Time from the request's arrival to its last byte sent",
            ("endpoint", "model"),
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self._ttft = Histogram(
            "seedgate_time_to_first_token_seconds",
            "Streams: time from the request's arrival to the upstream's first event",
            ("endpoint", "model"),
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self._tokens = Counter("seedgate_tokens", "Tokens charged, by model and kind", ("model", "kind"), registry=reg)
        self._spend = Counter("seedgate_spend_usd", "USD charged to keys, by model", ("model",), registry=reg)
        self._upstream = Counter(
            "seedgate_upstream_requests",
            "Attempts sent to upstreams, by upstream and outcome (HTTP status, timeout, unreachable)",
            ("upstream", "status"),
            registry=reg,
        )
        self._circuit = Gauge(
            "seedgate_upstream_circuit_open",
            "1 while a target's circuit is open or half-open (any live worker), else 0",
            ("upstream", "target"),
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.open_streams = Gauge(
            "seedgate_open_streams", "Streams being relayed now", multiprocess_mode="livesum", registry=reg
        )
        self.holds_outstanding = Gauge(
            "seedgate_holds_outstanding",
            "Money holds of requests still running",
            multiprocess_mode="livesum",
            registry=reg,
        )
        self._rejections = Counter(
            "seedgate_limit_rejections",
            "Requests refused by a rate limit, by kind (ip, rpm, tpm, tpm_request, concurrency)",
            ("kind",),
            registry=reg,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, family: Any, *labels: str) -> Any:
        cache_key = (id(family), *labels)
        child = self._children.get(cache_key)
        if child is None:
            child = self._children[cache_key] = family.labels(*labels)
        return child

    def request(
        self, endpoint: str, model: str | None, status: int, code: str | None, seconds: float, ttft: float | None
    ) -> None:
        model = model or ""
        self._child(self._requests, endpoint, model, str(status), code or "").inc()
        self._child(self._duration, endpoint, model).observe(seconds)
        if ttft is not None:
            self._child(self._ttft, endpoint, model).observe(ttft)

    def charged(self, model: str, usage: TokenUsage, cost_units: int) -> None:
        counts = (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens)
        for kind, count in zip(TOKEN_KINDS, counts, strict=True):
            if count:
                self._child(self._tokens, model, kind).inc(count)
        if cost_units:
            self._child(self._spend, model).inc(cost_units / UNITS_PER_USD)

    def upstream_attempt(self, upstream: str, status: str) -> None:
        self._child(self._upstream, upstream, status).inc()

    def circuit(self, target: str, is_open: bool) -> None:
        self._child(self._circuit, target.split("/", 1)[0], target).set(1 if is_open else 0)

    def limit_rejected(self, kind: str) -> None:
        self._child(self._rejections, kind).inc()

    def close(self) -> None:
        """A worker stopping cleanly: its live gauges (streams, holds, circuits) leave the totals."""
        path = multiprocess_dir()
        if path is not None:
            multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
