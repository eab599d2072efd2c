import pytest

from app.upstream_messages import MAX_SHOWN, PREFIX, client_message, client_param, operator_text

OPERATOR_KEY = "upstream-secret-key-ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.mark.parametrize(
    ("message", "kept", "gone"),
    [
        ("max_tokens must be <= 32768, see http://10.1.2.3:8080/api/v3", "max_tokens must be <= 32768", "10.1.2.3"),
        ("endpoint ep-20240101123456-abcde not found", "endpoint", "ep-2024"),
        ("account 2100123456 has no access to model x", "has no access", "2100123456"),
        ("AccountId: 123abc is over quota", "is over quota", "123abc"),
        ("Incorrect API key provided: sk-ab***yz.", "Incorrect API key provided", "sk-ab"),
        ("key ending in 9f3a is disabled", "is disabled", "9f3a"),
        ("upstream fd00::1 refused", "refused", "fd00::1"),
        ("host ark.cn-beijing.volces.com refused", "refused", "volces.com"),
        ("ask ops@corp.example.com", "ask", "ops@"),
        ("request 6ba7b810-9dad-11d1-80b4-00c04fd430c8 failed", "failed", "6ba7b810"),
        ("token AKLTYzQ5ZmU2ODQ3ZjdmNGFiYjk4YTY2MzFkNjBhYjkzZjM invalid", "invalid", "AKLTYzQ5"),
        (
            "messages[0].content: string too long (max 1048576)",
            "messages[0].content: string too long (max 1048576)",
            "@",
        ),
        ("Parameter 'temperature' must be between 0 and 2, got 3.5", "between 0 and 2, got 3.5", "@"),
    ],
)
def test_client_message_keeps_what_helps_and_drops_what_names_the_operator(message: str, kept: str, gone: str) -> None:
    shown = client_message(message)
    assert shown.startswith(PREFIX)
    assert kept in shown
    assert gone not in shown


def test_the_gateways_own_secrets_are_scrubbed_everywhere() -> None:
    text = f"bad request; auth {OPERATOR_KEY}"
    assert OPERATOR_KEY not in client_message(text, (OPERATOR_KEY,))
    assert OPERATOR_KEY not in (operator_text(text, (OPERATOR_KEY,)) or "")


def test_client_message_is_bounded_and_has_a_default() -> None:
    assert len(client_message("word " * 1000)) <= MAX_SHOWN
    assert client_message(None) == "The upstream service rejected the request."


@pytest.mark.parametrize(
    ("param", "shown"),
    [
        ("max_tokens", "max_tokens"),
        ("messages[0].content", "messages[0].content"),
        ("http://10.0.0.1", None),
        ("ep-abc", None),
        (42, None),
        ("x" * 100, None),
    ],
)
def test_only_a_plain_parameter_path_is_passed_on(param: object, shown: str | None) -> None:
    assert client_param(param) == shown
