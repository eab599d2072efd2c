import pytest

from app.clientip import TrustedProxies, client_ip

PROXIES = TrustedProxies.parse(["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"])


def test_untrusted_peer_ignores_spoofed_forwarded_for() -> None:
    assert client_ip("203.0.113.9", "1.1.1.1", PROXIES) == "203.0.113.9"
    assert client_ip("203.0.113.9", ["1.1.1.1", "10.0.0.2"], PROXIES) == "203.0.113.9"


def test_no_trusted_proxies_means_forwarded_for_is_never_read() -> None:
    assert client_ip("127.0.0.1", "1.1.1.1", TrustedProxies.parse([])) == "127.0.0.1"


def test_trusted_peer_takes_first_untrusted_address_from_the_right() -> None:
    # The client prepended 6.6.6.6 itself; nginx appended the address it really saw.
    assert client_ip("10.0.0.1", "6.6.6.6, 203.0.113.7", PROXIES) == "203.0.113.7"


def test_chain_of_trusted_proxies_is_skipped() -> None:
    xff = "6.6.6.6, 203.0.113.7, 10.0.0.5, 10.20.0.6"
    assert client_ip("127.0.0.1", xff, PROXIES) == "203.0.113.7"


def test_several_header_values_are_joined_in_order() -> None:
    assert client_ip("10.0.0.1", ["6.6.6.6, 203.0.113.7", "10.0.0.5"], PROXIES) == "203.0.113.7"
    assert client_ip("10.0.0.1", ["203.0.113.7", "6.6.6.6"], PROXIES) == "6.6.6.6"


def test_all_trusted_chain_yields_leftmost_address() -> None:
    assert client_ip("10.0.0.1", "10.0.0.9, 10.0.0.5", PROXIES) == "10.0.0.9"


@pytest.mark.parametrize("xff", [None, "", [], " , "])
def test_trusted_peer_without_forwarded_for_is_the_client(xff: str | list[str] | None) -> None:
    assert client_ip("10.0.0.1", xff, PROXIES) == "10.0.0.1"


def test_empty_list_elements_are_skipped_not_treated_as_garbage() -> None:
    assert client_ip("10.0.0.1", "203.0.113.7, , 10.0.0.5,", PROXIES) == "203.0.113.7"


def test_ipv6_cidr_trust_and_canonical_output() -> None:
    assert client_ip("fd00::1", "2001:DB8::5", PROXIES) == "2001:db8::5"
    assert client_ip("::1", "fd12::3, 2001:db8:0:0::7", PROXIES) == "2001:db8::7"
    assert client_ip("2001:db8::1", "1.1.1.1", PROXIES) == "2001:db8::1"


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("203.0.113.7:5678", "203.0.113.7"),
        ("[2001:db8::5]:443", "2001:db8::5"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("203.0.113.7:1, 10.0.0.5:80", "203.0.113.7"),
    ],
)
def test_ports_are_stripped(xff: str, expected: str) -> None:
    assert client_ip("10.0.0.1", xff, PROXIES) == expected


def test_trusted_hop_with_port_is_still_recognised_as_trusted() -> None:
    assert client_ip("10.0.0.1", "203.0.113.7, [fd00::2]:8080", PROXIES) == "203.0.113.7"


def test_ipv4_mapped_ipv6_is_normalised_to_ipv4() -> None:
    assert client_ip("::ffff:203.0.113.9", "1.1.1.1", PROXIES) == "203.0.113.9"
    # A dual-stack socket reports the proxy as mapped IPv6; it is still the trusted 10.0.0.0/8 proxy.
    assert client_ip("::ffff:10.0.0.1", "::ffff:203.0.113.7", PROXIES) == "203.0.113.7"


def test_ipv4_mapped_trusted_network_covers_the_ipv4_range() -> None:
    trusted = TrustedProxies.parse(["::ffff:192.168.0.0/112"])
    assert client_ip("192.168.3.4", "203.0.113.7", trusted) == "203.0.113.7"
    assert client_ip("192.169.0.1", "203.0.113.7", trusted) == "192.169.0.1"


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ("203.0.113.7, garbage, 10.0.0.5", "10.0.0.5"),  # stop at garbage: last valid seen
        ("203.0.113.7, garbage", "10.0.0.1"),  # nothing valid seen: the peer
        ("unknown", "10.0.0.1"),
        ("203.0.113.7, 10.0.0.5:notaport", "10.0.0.1"),
        ("203.0.113.7, [fd00::2", "10.0.0.1"),
        ("203.0.113.7, [fd00::2]x", "10.0.0.1"),
        ("203.0.113.7, 10.0.0.5:99999999", "10.0.0.1"),
        ("203.0.113.7, 010.0.0.5", "10.0.0.1"),  # leading zeros are ambiguous (octal?), refused
    ],
)
def test_malformed_entry_stops_the_walk(xff: str, expected: str) -> None:
    assert client_ip("10.0.0.1", xff, PROXIES) == expected


@pytest.mark.parametrize("peer", [None, ""])
def test_missing_peer_is_unknown(peer: str | None) -> None:
    assert client_ip(peer, "203.0.113.7", PROXIES) == "unknown"


def test_non_ip_peer_is_returned_untouched_and_never_trusted() -> None:
    assert client_ip("/run/seedgate.sock", "203.0.113.7", PROXIES) == "/run/seedgate.sock"


@pytest.mark.parametrize("entry", ["*", " * ", "0.0.0.0/0", "::/0", "::ffff:0:0/96"])
def test_trusting_everyone_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="refused"):
        TrustedProxies.parse(["10.0.0.0/8", entry])


@pytest.mark.parametrize("entry", ["nginx.local", "10.0.0.0/33", "10.0.0.1/8", "", "1.2.3.4:80"])
def test_invalid_entry_is_refused_and_named(entry: str) -> None:
    with pytest.raises(ValueError, match="invalid trusted proxy entry") as info:
        TrustedProxies.parse(["127.0.0.1", entry])
    assert repr(entry) in str(info.value)


def test_membership_matches_exact_addresses_and_networks() -> None:
    trusted = TrustedProxies.parse([" 192.0.2.1 ", "198.51.100.0/24", "2001:db8::/32", "10.9.9.9/32"])
    assert "192.0.2.1" in trusted
    assert "192.0.2.2" not in trusted
    assert "198.51.100.200" in trusted
    assert "198.51.101.1" not in trusted
    assert "2001:db8:ffff::1" in trusted
    assert "2001:db9::1" not in trusted
    assert "10.9.9.9" in trusted
    assert "not an ip" not in trusted
    assert bool(trusted)
    assert not TrustedProxies.parse([])
