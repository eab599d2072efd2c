"""What a client is told when the upstream rejects its request, and what only the operator sees.

Rules owned here:

- The upstream's own text never reaches the client as it came. ``client_message`` keeps what helps
  the client fix its request (which parameter, what limit, what value was wrong) and replaces with
  ``[redacted]`` everything that names the operator's infrastructure: URLs, host names, IPv4/IPv6
  addresses, e-mail addresses, account/tenant/project ids, ``ep-`` endpoint ids, UUIDs, and anything
  key-shaped (``sk-`` keys, ``Bearer`` values, masked ``ab***cd`` fragments, long random tokens, the
  value after ``key``/``token``/``secret``). It is prefixed with "The upstream rejected the request: "
  and capped at ``MAX_SHOWN`` characters.
- The upstream's ``param`` is passed on only when it looks like a parameter path (``messages[0].content``).
- The full text, with the gateway's own secrets scrubbed (``operator_text``), goes to the log and to
  ``upstream_errors`` with the request id (``app.upstream_errors``, ``GET /admin/upstream-errors``).
"""

from __future__ import annotations

import re

MAX_SHOWN = 300
MAX_KEPT = 2000
PREFIX = "The upstream rejected the request: "
REDACTED = "[redacted]"

_TLDS = (
    "com|net|org|io|ai|cn|dev|app|cloud|co|uk|de|jp|us|eu|info|biz|xyz|"
    "internal|local|lan|corp|svc|intra|private|localdomain|localhost|cluster|home|example|test|invalid"
)
# (pattern, replacement), in order: whole URLs and key material first, then what could be left of them
_R = REDACTED
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), replacement)
    for pattern, replacement in (
        (r"[a-z][a-z0-9+.\-]*://\S+", _R),  # URLs of any scheme
        (r"\bbearer\s+\S+", _R),
        (r"\bsk-[A-Za-z0-9_\-*.]*", _R),  # keys and their fragments
        (r"\S*\*{2,}\S*", _R),  # masked fragments: sk-ab***cd, ****1234
        (r"\b((?:key|token|secret|password|credential)s?(?:\s+\w+)?\s*[:=]\s*)\S+", rf"\1{_R}"),
        (r"\b((?:key|token|secret|credential)s?\s+(?:ending|ends)(?:\s+in|\s+with)?\s+)\S+", rf"\1{_R}"),
        (r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+", _R),  # e-mail addresses
        (r"\bep-[A-Za-z0-9_\-]+", _R),  # Ark endpoint ids
        (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", _R),  # UUIDs
        (r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b", _R),  # IPv4 (and port)
        (r"(?<![\w:])(?=[0-9a-f:]*:[0-9a-f]*:)[0-9a-f:]{2,39}(?:%\w+)?(?![\w:])", _R),  # IPv6
        (r"\blocalhost(?::\d+)?\b", _R),
        (rf"\b(?:[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\.)+(?:{_TLDS})\b(?::\d+)?", _R),  # host names
        # account / tenant / project / user / org ids: keep the word, drop the id
        (
            r"\b((?:account|acct|tenant|project|user|org|organization|customer|workspace|owner)"
            r"(?:[\s_\-]?id)?\s*[:=#]?\s*)[\"']?[A-Za-z0-9_\-]*\d[A-Za-z0-9_\-]*[\"']?",
            rf"\1{_R}",
        ),
        (r"\b[A-Za-z0-9_\-]{32,}\b", _R),  # long random tokens
        (r"\b[0-9a-f]{16,}\b", _R),  # long hex ids
        (r"\b\d{9,}\b", _R),  # long numeric ids (no real limit is that large)
    )
)
_PARAM = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]]{0,63}$")
_SPACES = re.compile(r"\s+")


def client_message(message: str | None, secrets: tuple[str, ...] = ()) -> str:
    """The gateway's message for an upstream 400/422: what helps the client, nothing naming the operator."""
    if not message:
        return "The upstream service rejected the request."
    text = scrub_secrets(message, secrets)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    text = _SPACES.sub(" ", text).strip()
    shown = PREFIX + text
    return shown if len(shown) <= MAX_SHOWN else shown[: MAX_SHOWN - 3] + "..."


def client_param(param: object) -> str | None:
    """The upstream's ``param`` when it is a plain parameter path, else nothing."""
    if isinstance(param, str) and _PARAM.match(param) and not param.lower().startswith("ep-"):
        return param
    return None


def scrub_secrets(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def operator_text(message: str | None, secrets: tuple[str, ...] = ()) -> str | None:
    """The upstream's text for the log and the admin view: bounded, the gateway's secrets scrubbed."""
    if message is None:
        return None
    text = scrub_secrets(message, secrets)
    for pattern, replacement in _PATTERNS[1:3]:  # Bearer values and sk- keys
        text = pattern.sub(replacement, text)
    return text[:MAX_KEPT]
