"""Logging with one redaction filter on every sink.

The filter scrubs ``Authorization``/``Bearer`` values, anything shaped like an ``sk-`` key and every
configured secret (master key, upstream keys) from the final message, whatever logger produced it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

# the value after x-api-key may be quoted, as in a logged dict or JSON of headers
_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[^\s\"',]+|(?i:authorization)[\"']?\s*[:=]\s*[\"']?[^\"',]+|(?i:x-api-key)[\"']?\s*[:=]\s*[\"']?[^\s\"',]+)"
)
REDACTED = "[redacted]"


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _PATTERNS.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = self.redact(message)
        record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # drivers log every statement with its parameters (key hashes) at INFO/DEBUG: warnings only
    for name in ("aiosqlite", "sqlalchemy.engine", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
