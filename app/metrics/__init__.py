"""Prometheus metrics: what is recorded where, how it is exposed, how workers share it.

    recorder.py    ``Metrics``: the metric families and cached label children, one per process
    exposition.py  ``GET /metrics``: who may scrape (bearer token, else the allow-list), and the text
    workers.py     the serving parent's set-up for ``--workers N`` (multi-process mode)

Rules: no key id is ever a label (cardinality and privacy); every label takes values from a bounded
set -- configured models and upstreams, route templates, gateway error codes, HTTP statuses. With
several workers each process writes its values to files under ``PROMETHEUS_MULTIPROC_DIR`` and a
scrape sums them (counters and histograms survive a worker's death; gauges of dead workers are
dropped).
"""

from app.metrics.recorder import Metrics
from app.metrics.workers import prepare_workers

__all__ = ["Metrics", "prepare_workers"]
