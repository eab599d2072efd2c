import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from app.inbound import AccessRecord
from app.logs import REDACTED, RedactingFilter, configure_logging, log_access
from app.main import create_app
from app.settings import Settings

USER_KEY = "sk-AbCdEf0123456789GhIjKl0123456789MnOpQr0123456789xyz"
MASTER_KEY = "master-Zq8vN3xK7pL2mR9tW4yB"
UPSTREAM_KEY = "3f1c9a2e-7b4d-4e8f-9a10-abcdef012345"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter([MASTER_KEY, UPSTREAM_KEY]))
    logger = logging.getLogger("seedgate.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_user_keys_are_removed(capture) -> None:
    logger, stream = capture
    logger.info("auth with %s failed", USER_KEY)
    out = stream.getvalue()
    assert USER_KEY not in out
    assert USER_KEY[:12] not in out
    assert f"auth with {REDACTED} failed" in out


@pytest.mark.parametrize(
    "line",
    [
        "Authorization: Bearer opaque-token-value",
        "AUTHORIZATION: BEARER opaque-token-value",
        "token BeArEr opaque-token-value",
        "authorization=bearer opaque-token-value",
        "headers={'authorization': 'Bearer opaque-token-value'}",
        "x-api-key: opaque-token-value",
        "X-Api-Key=opaque-token-value",
        '{"x-api-key": "opaque-token-value"}',
        "{'x-api-key': 'opaque-token-value'}",
    ],
)
def test_header_values_are_removed(capture, line) -> None:
    logger, stream = capture
    logger.warning(line)
    out = stream.getvalue()
    assert "opaque-token-value" not in out
    assert REDACTED in out


def test_configured_secrets_are_removed_whatever_their_shape(capture) -> None:
    logger, stream = capture
    logger.error("upstream said: bad key %s (admin %s)", UPSTREAM_KEY, MASTER_KEY)
    out = stream.getvalue()
    assert UPSTREAM_KEY not in out
    assert MASTER_KEY not in out
    assert out.count(REDACTED) == 2


def test_secrets_inside_exception_tracebacks_are_removed(capture) -> None:
    logger, stream = capture
    try:
        raise RuntimeError(f"connect failed for {USER_KEY} via {UPSTREAM_KEY} with Bearer opaque-token-value")
    except RuntimeError:
        logger.exception("request failed")
    out = stream.getvalue()
    assert "Traceback" in out
    assert "RuntimeError" in out
    for secret in (USER_KEY, UPSTREAM_KEY, "opaque-token-value"):
        assert secret not in out


def test_ordinary_text_and_key_ids_are_kept(capture) -> None:
    logger, stream = capture
    logger.info("key %s spent %s on %s", "key_0123456789abcdef", "0.25", "doubao-seed-2.0-pro")
    assert "key key_0123456789abcdef spent 0.25 on doubao-seed-2.0-pro" in stream.getvalue()


def test_short_configured_secrets_are_ignored() -> None:
    # a short "secret" such as "a" would shred every log line
    assert RedactingFilter(["a", "abc"]).redact("a cat sat") == "a cat sat"


@pytest.fixture
def root_sink() -> Iterator[None]:
    """The root logger's handlers and level as they were, after a test that configures logging."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


@pytest.mark.usefixtures("root_sink")
def test_configure_logging_installs_the_filter_on_the_root_sink(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", [MASTER_KEY])
    logging.getLogger("uvicorn.error").info("boot with %s and %s", MASTER_KEY, USER_KEY)
    err = capsys.readouterr().err
    assert "boot with" in err
    assert MASTER_KEY not in err
    assert USER_KEY not in err


def test_database_drivers_never_log_statements_even_at_debug():
    import logging

    from app.logs import configure_logging

    configure_logging("DEBUG", [])
    try:
        for name in ("sqlalchemy.engine", "aiosqlite", "asyncpg"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    finally:
        configure_logging("WARNING", [])


def test_logging_access_false_silences_the_access_lines_only() -> None:
    access = logging.getLogger("seedgate.access")
    try:
        create_app(Settings(logging={"access": False}))
        assert access.disabled
        assert not logging.getLogger("seedgate.request").disabled
        create_app(Settings())
        assert not access.disabled
    finally:
        access.disabled = False


@pytest.mark.usefixtures("root_sink")
def test_a_key_in_the_path_is_removed_from_the_json_access_fields_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", [MASTER_KEY], json=True)
    record = AccessRecord(endpoint=f"/{USER_KEY}/v1/models")
    log_access("req_1", "GET", 404, record, f"10.0.0.1 {MASTER_KEY}", time.perf_counter())
    [line] = capsys.readouterr().err.splitlines()
    assert USER_KEY not in line
    assert MASTER_KEY not in line
    fields = json.loads(line)
    assert fields["path"] == f"/{REDACTED}/v1/models"
    assert (fields["status"], fields["request_id"]) == (404, "req_1")
