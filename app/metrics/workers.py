"""The serving parent's set-up for ``--workers N``: one fresh shared directory for the metrics files.

It must run before any worker starts (each worker's ``prometheus_client`` reads
``PROMETHEUS_MULTIPROC_DIR`` when imported). An operator's own ``PROMETHEUS_MULTIPROC_DIR`` is used
and emptied of stale files from an earlier run; otherwise a private temporary directory is made and
removed when the parent exits. One worker needs none of this (its registry lives in memory) unless
the operator set the directory anyway, in which case it is emptied the same way.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_workers(workers: int) -> str | None:
    """Point every worker at a clean shared directory; returns it (None for a single process)."""
    given = os.environ.get(ENV)
    if not given and workers <= 1:
        return None
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # values of an earlier run would be summed into this one
            stale.unlink(missing_ok=True)
        return str(path)
    created = tempfile.mkdtemp(prefix="seedgate-metrics-")
    atexit.register(shutil.rmtree, created, True)
    os.environ[ENV] = created
    return created
