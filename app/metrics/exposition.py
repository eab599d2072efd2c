"""``GET /metrics``: who may scrape, and the exposition text.

Access: when ``metrics.token`` is set, every scrape must carry it as ``Authorization: Bearer``,
whatever its address (401 otherwise); without a token, only clients whose address (after
``server.trusted_proxies``) is in ``metrics.allow`` may scrape (default: loopback; 403 otherwise).

Several workers (``PROMETHEUS_MULTIPROC_DIR`` set): the scrape, served by whichever worker, merges
every worker's files. Gauges of workers that died are dropped first (``mark_process_dead``), so a
restarted worker's open streams do not count twice; counters and histograms keep their share.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from app.errors import AuthenticationFailed, GatewayError
from app.keys import hmac_equal
from app.metrics.recorder import Metrics, multiprocess_dir

_PID_FILE = re.compile(r"_(\d+)\.db$")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ScrapeForbidden(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "metrics_forbidden"


class ScrapeAccess:
    """The bearer token, or the allow-list of addresses and networks."""

    def __init__(self, token: str | None, allow: Iterable[str]) -> None:
        self._token = token or None
        self._allow: list[IPv4Network | IPv6Network] = [ip_network(entry.strip(), strict=False) for entry in allow]

    def check(self, bearer: str | None, client: str) -> None:
        if self._token is not None:
            if bearer is None or not hmac_equal(bearer, self._token):
                raise AuthenticationFailed("Scraping /metrics needs 'Authorization: Bearer <metrics.token>'.")
            return
        if not self._allowed(client):
            raise ScrapeForbidden("This address may not scrape /metrics (see metrics.allow or metrics.token).")

    def _allowed(self, client: str) -> bool:
        try:
            address = ip_address(client.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == net.version and address in net for net in self._allow)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_workers(path: str) -> None:
    """Drop the live gauges of every worker that is gone (its pid no longer runs)."""
    pids = {int(m.group(1)) for name in os.listdir(path) if (m := _PID_FILE.search(name))}
    for pid in pids:
        if pid != os.getpid() and not _pid_alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def exposition(metrics: Metrics) -> bytes:
    path = multiprocess_dir()
    if path is None and metrics.registry is not None:
        return generate_latest(metrics.registry)
    assert path is not None  # noqa: S101 -- Metrics without a registry means multi-process mode
    forget_dead_workers(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
