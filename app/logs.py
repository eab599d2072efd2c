"""Logging: one redaction filter on every sink, text or JSON lines, and the access line.

The filter scrubs ``Authorization``/``Bearer`` values, anything shaped like an ``sk-`` key and every
configured secret (master key, upstream keys) from the final message, whatever logger produced it,
and from the access line's JSON fields (a client can put a key in the path).

``log_access`` writes one line per HTTP request, accepted or refused, on the ``seedgate.access``
logger: request id, method, path, status, error code, endpoint, model, key id (never the key), client
address, latency, and for billed requests tokens and cost. With ``logging.format: json`` every line is
a JSON object and the access fields are its keys.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from app.inbound import AccessRecord

# the value after x-api-key may be quoted, as in a logged dict or JSON of headers
_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[^\s\"',]+|(?i:authorization)[\"']?\s*[:=]\s*[\"']?[^\"',]+|(?i:x-api-key)[\"']?\s*[:=]\s*[\"']?[^\s\"',]+)"
)
REDACTED = "[redacted]"
# every pattern above contains one of these (lower-cased): a line without any needs no regex pass,
# which is most lines -- the access line of every request among them
_TRIGGERS = ("sk-", "bearer", "authorization", "x-api-key")


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        lower = text.lower()
        if any(trigger in lower for trigger in _TRIGGERS):
            text = _PATTERNS.sub(REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = self.redact(message)
        record.msg, record.args = cleaned, None
        fields = getattr(record, "access", None)
        if cleaned != message and isinstance(fields, dict):  # the access line's text holds every field's value
            record.access = {k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus the access fields if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line).decode()


access_log = logging.getLogger("seedgate.access")


def log_access(request_id: str, method: str, status: int, record: AccessRecord, client: str, started: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": method,
        "path": record.endpoint if record.endpoint.startswith("/") else None,
        "endpoint": None if record.endpoint.startswith("/") else record.endpoint,
        "status": status,
        "code": record.error_code,
        "model": record.model,
        "key_id": record.key_id,
        "client": client,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if record.cost or record.prompt_tokens or record.completion_tokens:
        fields |= {"prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens}
        fields["cost_units"] = record.cost
    text = " ".join(f"{name}={value}" for name, value in fields.items() if value is not None)
    access_log.info("%s", text, extra={"access": fields})


def configure_logging(level: str, secrets: Iterable[str] = (), *, json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # no record field the formats use needs these; skipping them saves ~2 us per line (the logging
    # HOWTO, "Optimization"): the caller's frame lookup, thread and process names
    setattr(logging, "_srcfile", None)  # noqa: B010 -- not in the typeshed stubs
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # drivers log every statement with its parameters (key hashes) at INFO/DEBUG: warnings only
    for name in ("aiosqlite", "sqlalchemy.engine", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
