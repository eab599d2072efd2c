import orjson
import pytest

from app.errors import InvalidRequest
from app.json import MAX_JSON_DEPTH, parse_request_json, too_deep


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_a_body_at_the_depth_limit_is_accepted() -> None:
    assert parse_request_json(nested(MAX_JSON_DEPTH)) is not None
    assert parse_request_json(b'{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 1000])
def test_a_body_nested_deeper_is_refused_as_json_too_deep(depth: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request_json(nested(depth))
    assert caught.value.code == "json_too_deep"
    assert caught.value.status == 400


def test_many_shallow_containers_are_not_deep() -> None:
    wide = orjson.dumps({"messages": [{"role": "user", "content": [{"type": "text"}]}] * 500})
    assert parse_request_json(wide)["messages"][0]["role"] == "user"


def test_depth_counts_objects_and_arrays_alike() -> None:
    value: object = 1
    for i in range(10):
        value = {"k": value} if i % 2 else [value]
    assert too_deep(value, 9)
    assert not too_deep(value, 10)


def test_invalid_json_is_a_400() -> None:
    with pytest.raises(InvalidRequest):
        parse_request_json(b"{not json")
