"""Client IP resolution behind trusted reverse proxies.

Rules owned here:

- The only address believed without question is the peer handed over by the ASGI server
  (`scope["client"][0]`). A request whose peer is not a configured trusted proxy is answered with that
  peer, and its X-Forwarded-For is ignored completely (anyone can write that header).
- From a trusted peer, X-Forwarded-For (all header values joined, comma separated) is walked from the
  RIGHT, because each proxy appends the address it saw: the first address that is not a trusted proxy
  is the client. If every address is trusted the leftmost wins. A malformed entry stops the walk and
  the last valid address seen (or the peer) is the client: whatever lies left of garbage is unverifiable.
- Trusting everyone (`*`, `0.0.0.0/0`, `::/0`) is refused: every client could then pick its own IP and
  walk around per-IP limits.
- Addresses come out canonical (port stripped, IPv4-mapped IPv6 as IPv4, IPv6 compressed lower case),
  so one client always lands in one rate-limit bucket.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import NamedTuple

UNKNOWN = "unknown"


class _Address(NamedTuple):
    version: int
    value: int
    text: str


@functools.lru_cache(maxsize=4096)
def _parse_address(raw: str) -> _Address | None:
    """Parse `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]` or `[::1]:80`; None when it is not an IP address.

    Cached because the same few proxy and client addresses repeat on every request.
    """
    text = raw
    if text.startswith("["):
        end = text.find("]")
        port = text[end + 1 :]
        if end < 0 or (port and not _is_port(port)):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 always has at least two colons
        text, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return _Address(address.version, int(address), str(address))


def _is_port(text: str) -> bool:
    digits = text[1:]
    return text.startswith(":") and 0 < len(digits) <= 5 and digits.isascii() and digits.isdigit()


class TrustedProxies:
    """The set of proxy addresses whose X-Forwarded-For is believed. Immutable once parsed."""

    __slots__ = ("_exact", "_v4", "_v6")

    def __init__(
        self,
        exact: Iterable[str] = (),
        v4: Iterable[tuple[int, int]] = (),
        v6: Iterable[tuple[int, int]] = (),
    ) -> None:
        # Single addresses are kept as canonical strings for a set lookup; networks as (network, mask)
        # integers so membership is one AND per network. Use `parse` to build one from config.
        self._exact = frozenset(exact)
        self._v4 = tuple(v4)
        self._v6 = tuple(v6)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """Build from config entries (IPs or CIDRs, IPv4 or IPv6). Raises ValueError naming a bad entry."""
        exact: set[str] = set()
        v4: set[tuple[int, int]] = set()
        v6: set[tuple[int, int]] = set()
        for entry in entries:
            text = entry.strip()
            if text == "*":
                raise ValueError("trusted proxy '*' refused: trusting every address lets any client spoof its IP")
            try:
                network: IPv4Network | IPv6Network = ip_network(text)
            except ValueError as exc:
                raise ValueError(f"invalid trusted proxy entry {entry!r}: {exc}") from None
            # IPv4-mapped networks become IPv4 networks, because addresses are normalised the same way.
            if isinstance(network, IPv6Network) and network.prefixlen >= 96:
                mapped = network.network_address.ipv4_mapped
                if mapped is not None:
                    network = IPv4Network((mapped, network.prefixlen - 96))
            if network.prefixlen == 0:
                raise ValueError(
                    f"trusted proxy {entry!r} refused: it covers every address, letting any client spoof its IP"
                )
            if network.num_addresses == 1:
                exact.add(str(network.network_address))
            elif network.version == 4:
                v4.add((int(network.network_address), int(network.netmask)))
            else:
                v6.add((int(network.network_address), int(network.netmask)))
        return cls(exact, sorted(v4), sorted(v6))

    def __bool__(self) -> bool:
        return bool(self._exact or self._v4 or self._v6)

    def __contains__(self, address: object) -> bool:
        """Whether an address (string, with or without port) is a trusted proxy."""
        if isinstance(address, str):
            parsed = _parse_address(address)
            return parsed is not None and self._trusts(parsed)
        return False

    def _trusts(self, address: _Address) -> bool:
        if address.text in self._exact:
            return True
        value = address.value
        networks = self._v4 if address.version == 4 else self._v6
        return any(value & mask == net for net, mask in networks)


def client_ip(peer: str | None, x_forwarded_for: list[str] | str | None, trusted: TrustedProxies) -> str:
    """The client's address for limits and logs; see the module docstring for the rules."""
    if not peer:
        return UNKNOWN
    parsed = _parse_address(peer)
    if parsed is None:
        return peer  # not an IP (e.g. a unix socket name): never a trusted proxy, used as-is
    if not x_forwarded_for or not trusted._trusts(parsed):
        return parsed.text
    joined = x_forwarded_for if isinstance(x_forwarded_for, str) else ",".join(x_forwarded_for)
    result = parsed
    for item in reversed(joined.split(",")):
        raw = item.strip()
        if not raw:
            continue  # empty list elements ("a, , b") are legal HTTP list syntax, not garbage
        hop = _parse_address(raw)
        if hop is None:
            break
        result = hop
        if not trusted._trusts(hop):
            break
    return result.text
