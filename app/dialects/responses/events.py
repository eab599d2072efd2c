"""The bytes of Responses stream events: each event's head, and each text item's events as templates.

Every event is ``event: <type>`` + ``data: {"type", "sequence_number", ...}``; ``head(kind)`` is that
up to the sequence number, the writer (``app.dialects.responses.stream``) adds the rest. A text item
(``reasoning`` or ``message``) is described once, as a ``TextKind``: its events are filled in with one
``%`` each, never built member by member -- they are written on every streamed request.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.dialects.responses.response import EMPTY_OUTPUT_TEXT, message_json


def head(kind: str) -> bytes:
    """The bytes of a ``kind`` event up to its sequence number (``_event`` writes the rest)."""
    name = kind.encode()
    return b'event: %b\ndata: {"type":"%b","sequence_number":' % (name, name)


CREATED, IN_PROGRESS = head("response.created"), head("response.in_progress")
COMPLETED, INCOMPLETE, FAILED = head("response.completed"), head("response.incomplete"), head("response.failed")
ITEM_ADDED, ITEM_DONE = head("response.output_item.added"), head("response.output_item.done")
STARTED = CREATED + b'%d,"response":%b}\n\n' + IN_PROGRESS + b'%d,"response":%b}\n\n'  # seq, response twice
ARGUMENTS_DELTA = head("response.function_call_arguments.delta")
ARGUMENTS_DONE = head("response.function_call_arguments.done")


@dataclass(frozen=True, slots=True)
class TextKind:
    """How one kind of text item (``reasoning`` or ``message``) streams: the chunk field it comes from, the
    other text field, and its events as templates, each written in one ``%`` (placeholders in the order
    they appear; ``<common>`` is ``common`` filled in: the members every event of the item starts with).

    - ``opened``: seq, output_index, item id; seq + 1, <common> -- ``output_item.added`` and the part added
    - ``delta``: the bytes of a delta event before its sequence number, between it and the text, after
    - ``closed``: seq, <common>, text; seq + 1, <common>, part; seq + 2, output_index, item -- the text
      done, the part done and ``output_item.done``
    """

    field: str
    other: str
    id_prefix: str
    common: bytes
    opened: bytes
    delta: tuple[bytes, bytes]  # head up to the sequence number, after the text
    closed: bytes


def text_kind(field: str, other: str, id_prefix: str, names: tuple[str, str, str, str], index_key: str) -> TextKind:
    part_added, delta, text_done, part_done = (head(f"response.{name}") for name in names)
    empty_item, empty_part, text_tail = (
        (b'{"type":"reasoning","id":"%b","summary":[]}', b'{"type":"summary_text","text":""}', b"")
        if id_prefix == "rs"
        else (message_json("%b", b"", status="in_progress"), EMPTY_OUTPUT_TEXT, b',"logprobs":[]')
    )
    return TextKind(
        field=field,
        other=other,
        id_prefix=id_prefix,
        common=b'"item_id":"%b","output_index":%d,"' + index_key.encode() + b'":0',
        opened=ITEM_ADDED
        + b'%d,"output_index":%d,"item":'
        + empty_item
        + b"}\n\n"
        + part_added
        + b'%d,%b,"part":'
        + empty_part
        + b"}\n\n",
        delta=(delta, text_tail + b"}\n\n"),
        closed=text_done
        + b'%d,%b,"text":%b'
        + text_tail
        + b"}\n\n"
        + part_done
        + b'%d,%b,"part":%b}\n\n'
        + ITEM_DONE
        + b'%d,"output_index":%d,"item":%b}\n\n',
    )


REASONING = text_kind(
    "reasoning_content",
    "content",
    "rs",
    (
        "reasoning_summary_part.added",
        "reasoning_summary_text.delta",
        "reasoning_summary_text.done",
        "reasoning_summary_part.done",
    ),
    "summary_index",
)
MESSAGE = text_kind(
    "content",
    "reasoning_content",
    "msg",
    ("content_part.added", "output_text.delta", "output_text.done", "content_part.done"),
    "content_index",
)
SUMMARY_PART = b'{"type":"summary_text","text":%b}'
MESSAGE_DONE = message_json("%b", b"%b")  # a finished message item: its id, its part
