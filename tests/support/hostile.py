"""Hypothesis strategies for hostile request bodies: the right shape, the wrong types, or neither.

Each billed endpoint's body is built around its schema -- every member optional, and each either of the
right kind or any JSON value (huge and negative numbers, deep nesting, unknown models and roles). Used
by the in-process parse fuzz (tests/unit/test_hostile_requests.py) and against a real gateway
(tests/e2e/test_fuzz_billed_endpoints.py).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

MODELS = ["doubao-seed-2.0-pro", "pro-latest", "claude-sonnet-4-6", "doubao-seed-2.0-mini", "no-such-model", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25,
)


def deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": [value]}
    return value


content = (
    st.text(max_size=50)
    | json_values
    | st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image_url", "image", "tool_use", "x"])},
            optional={"text": json_values, "image_url": json_values, "source": json_values},
        ),
        max_size=3,
    )
    | st.integers(60, 300).map(deep)
)
messages = (
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer", "x"]) | json_values},
            optional={"content": content, "tool_calls": json_values, "name": json_values, "tool_call_id": json_values},
        ),
        max_size=4,
    )
    | json_values
)
request_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(MODELS) | json_values,
        "messages": messages,
        "system": content,
        "max_tokens": st.integers(-5, 2**66) | json_values,
        "max_completion_tokens": st.integers(-5, 2**66) | json_values,
        "n": st.integers(-2, 200) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "temperature": json_values,
        "thinking": json_values,
        "metadata": json_values,
    },
)

parts = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file", "refusal", "x"])},
        optional={"text": json_values, "image_url": json_values, "detail": json_values},
    )
    | json_values,
    max_size=3,
)
input_items = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "x"]) | json_values},
        optional={
            "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | json_values,
            "content": st.text(max_size=20) | parts | json_values,
            "call_id": json_values,
            "name": json_values,
            "arguments": json_values,
            "output": json_values,
            "summary": json_values,
            "encrypted_content": json_values,
        },
    )
    | json_values,
    max_size=4,
)
responses_tools = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "namespace", "web_search", "custom", "x"]) | json_values},
        optional={"name": json_values, "parameters": json_values, "tools": json_values, "strict": json_values},
    )
    | json_values,
    max_size=3,
)
responses_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(MODELS) | json_values,
        "input": st.text(max_size=30) | input_items | st.integers(60, 300).map(deep),
        "instructions": json_values,
        "tools": responses_tools | json_values,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | json_values,
        "parallel_tool_calls": json_values,
        "reasoning": st.fixed_dictionaries({}, optional={"effort": json_values, "summary": json_values}) | json_values,
        "max_output_tokens": st.integers(-5, 2**66) | json_values,
        "temperature": json_values,
        "text": st.fixed_dictionaries({}, optional={"format": json_values}) | json_values,
        "metadata": json_values,
        "store": st.booleans() | json_values,
        "stream": st.booleans() | json_values,
        "previous_response_id": st.sampled_from(["resp_nope", ""]) | json_values,
        "include": st.lists(st.sampled_from(["reasoning.encrypted_content", "x"]), max_size=2) | json_values,
    },
)
