"""Broker <-> worker wire protocol: framing, round trips and every way a frame is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from bastion_wire.protocol import (
    HEADER,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Done,
    Failed,
    FileSkipped,
    FrameReader,
    Line,
    Lines,
    Progress,
    ProtocolError,
    Ready,
    SearchRequest,
    Setup,
    SetupFailed,
    TailRequest,
    Text,
    encode_frame,
    from_worker_reader,
    to_worker_reader,
)

TO_WORKER: list[msgspec.Struct] = [
    Setup(version=PROTOCOL_VERSION, kind="grep", plan=b"\x00\x01plan\xff"),
    SearchRequest(pattern="Failed password|-e", max_lines=100, max_line_bytes=4096),
    TailRequest(max_bytes=1 << 20, max_line_bytes=64),
]

FROM_WORKER: list[msgspec.Struct] = [
    Ready(version=PROTOCOL_VERSION, layers=["rlimits", "landlock", "seccomp"]),
    Ready(version=PROTOCOL_VERSION, layers=[]),
    SetupFailed(layer="seccomp", reason="not supported by this kernel"),
    Lines(lines=[Line(1, "first"), Line(42, "日本 é \\x1b[31m"), Line(7, "")]),
    Lines(lines=[]),
    Text(text="tail of a log\n"),
    Progress(scanned=0, files_done=0),
    Progress(scanned=1 << 40, files_done=32),
    Done(more=True),
    Done(more=False),
    Done(more=False, counts=[3, 0], skipped=[FileSkipped(1, "SIGKILL")], decompressed=1 << 20),
    Failed(code="bad_pattern", message="unmatched '('"),
    Failed(code="too_large", message=""),
]

READERS: dict[str, tuple[Callable[[], FrameReader], list[msgspec.Struct]]] = {
    "to_worker": (to_worker_reader, TO_WORKER),
    "from_worker": (from_worker_reader, FROM_WORKER),
}


def frame_of(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def raw_map(**fields: Any) -> bytes:
    return frame_of(msgspec.msgpack.encode(fields))


@pytest.mark.parametrize(
    ("make_reader", "message"),
    [(to_worker_reader, m) for m in TO_WORKER] + [(from_worker_reader, m) for m in FROM_WORKER],
    ids=lambda v: type(v).__name__ if isinstance(v, msgspec.Struct) else v.__name__,
)
def test_round_trip_one_feed(make_reader: Callable[[], FrameReader], message: msgspec.Struct) -> None:
    reader = make_reader()
    frame = encode_frame(message)
    assert HEADER.unpack_from(frame)[0] == len(frame) - HEADER.size
    decoded = reader.feed(frame)
    assert decoded == [message]
    assert type(decoded[0]) is type(message)
    assert reader.pending == 0


@pytest.mark.parametrize("direction", sorted(READERS))
def test_round_trip_byte_by_byte(direction: str) -> None:
    make_reader, messages = READERS[direction]
    reader = make_reader()
    stream = b"".join(encode_frame(m) for m in messages)
    out: list[msgspec.Struct] = []
    for index in range(len(stream)):
        got = reader.feed(stream[index : index + 1])
        assert len(got) <= 1
        out += got
        if got:
            assert reader.pending == 0
    assert out == messages
    assert reader.pending == 0


@pytest.mark.parametrize("direction", sorted(READERS))
@pytest.mark.parametrize("split", [0, 1, 3, 4, 5, 17])
def test_several_frames_in_one_feed_with_remainder(direction: str, split: int) -> None:
    """All complete frames come out of one feed; a trailing partial frame waits for the rest."""
    make_reader, messages = READERS[direction]
    reader = make_reader()
    last = encode_frame(messages[0])
    stream = b"".join(encode_frame(m) for m in messages) + last[:split]
    assert reader.feed(stream) == messages
    assert reader.pending == split
    assert reader.feed(last[split:]) == [messages[0]]
    assert reader.pending == 0


@pytest.mark.parametrize("announced", [MAX_FRAME_BYTES + 1, MAX_FRAME_BYTES * 4, 0xFFFFFFFF])
@pytest.mark.parametrize("direction", sorted(READERS))
def test_oversized_header_refused_before_body(direction: str, announced: int) -> None:
    reader = READERS[direction][0]()
    # Only the 4-byte header: the reader must refuse without waiting for the body.
    with pytest.raises(ProtocolError, match="announces"):
        reader.feed(HEADER.pack(announced))


def test_header_at_exact_limit_waits_for_body() -> None:
    reader = to_worker_reader()
    assert reader.feed(HEADER.pack(MAX_FRAME_BYTES) + b"\x80") == []
    assert reader.pending == HEADER.size + 1


@pytest.mark.parametrize("max_frame", [8, 64])
def test_custom_frame_limit(max_frame: int) -> None:
    reader = FrameReader(Done, max_frame_bytes=max_frame)
    with pytest.raises(ProtocolError):
        reader.feed(HEADER.pack(max_frame + 1))


@pytest.mark.parametrize(
    "message",
    [
        Text(text="x" * MAX_FRAME_BYTES),
        Lines(lines=[Line(i, "y" * 1024) for i in range(1, 1100)]),
        Setup(version=PROTOCOL_VERSION, kind="grep", plan=b"\x00" * (MAX_FRAME_BYTES + 1)),
    ],
    ids=["text", "lines", "setup"],
)
def test_encode_refuses_oversized(message: msgspec.Struct) -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode_frame(message)


def test_encode_just_under_limit_is_accepted() -> None:
    # str8/str32 header of a msgpack string plus the map keys cost a few bytes.
    frame = encode_frame(Text(text="x" * (MAX_FRAME_BYTES - 64)))
    assert len(frame) - HEADER.size <= MAX_FRAME_BYTES
    assert from_worker_reader().feed(frame) == [Text(text="x" * (MAX_FRAME_BYTES - 64))]


BAD_FROM_WORKER: list[tuple[str, bytes]] = [
    ("garbage_msgpack", frame_of(b"\xc1\xc1\xc1")),
    ("truncated_msgpack_inside_frame", frame_of(b"\x83\xa4type")),
    ("not_a_map", frame_of(msgspec.msgpack.encode([1, 2, 3]))),
    ("empty_payload", frame_of(b"")),
    ("unknown_tag", raw_map(type="exec", argv=["/bin/sh"])),
    ("missing_tag", raw_map(more=True)),
    ("extra_field", raw_map(type="done", more=False, extra=1)),
    ("missing_field", raw_map(type="failed", code="io_error")),
    ("wrong_type_bool", raw_map(type="done", more="yes")),
    ("wrong_type_int_for_bool", raw_map(type="done", more=1)),
    ("wrong_type_version", raw_map(type="ready", version="1", layers=[])),
    ("wrong_type_layers", raw_map(type="ready", version=1, layers="landlock")),
    ("line_not_array", raw_map(type="lines", lines=[{"line_no": 1, "text": "a"}])),
    ("line_extra_item", raw_map(type="lines", lines=[[1, "a", "b"]])),
    ("line_text_bytes", raw_map(type="lines", lines=[[1, b"a"]])),
    ("unknown_failure_code", raw_map(type="failed", code="pwned", message="x")),
    # a skipped file's signal reaches the client's notes: only a signal's name passes
    ("skipped_signal_not_a_name", raw_map(type="done", more=False, skipped=[[0, "\x1b]0;pwned\x07"]])),
    ("skipped_signal_too_long", raw_map(type="done", more=False, skipped=[[0, "SIG" + "A" * 40]])),
    ("skipped_negative_file", raw_map(type="done", more=False, skipped=[[-1, "SIGKILL"]])),
    ("negative_decompressed", raw_map(type="done", more=False, decompressed=-1)),
    ("negative_progress", raw_map(type="progress", scanned=-1, files_done=0)),
    ("progress_not_an_int", raw_map(type="progress", scanned=1.5, files_done=0)),
    ("progress_extra_field", raw_map(type="progress", scanned=1, files_done=0, total=2)),
    ("to_worker_setup", encode_frame(TO_WORKER[0])),
    ("to_worker_search", encode_frame(TO_WORKER[1])),
    ("to_worker_tail", encode_frame(TO_WORKER[2])),
]

BAD_TO_WORKER: list[tuple[str, bytes]] = [
    ("garbage_msgpack", frame_of(b"\xff\xfe\xfd")),
    ("unknown_tag", raw_map(type="shell", cmd="id")),
    ("extra_field", raw_map(type="tail", max_bytes=1, max_line_bytes=64, follow=True)),
    ("wrong_type", raw_map(type="search", pattern="a", max_lines="10", max_line_bytes=64)),
    ("wrong_type_plan", raw_map(type="setup", version=1, kind="grep", plan="str")),
    ("missing_field", raw_map(type="search", pattern="a", max_lines=1)),
] + [(f"from_worker_{type(m).__name__}", encode_frame(m)) for m in FROM_WORKER]


@pytest.mark.parametrize(
    ("make_reader", "frame"),
    [pytest.param(from_worker_reader, f, id=f"from_worker-{n}") for n, f in BAD_FROM_WORKER]
    + [pytest.param(to_worker_reader, f, id=f"to_worker-{n}") for n, f in BAD_TO_WORKER],
)
def test_malformed_frames_raise_protocol_error(make_reader: Callable[[], FrameReader], frame: bytes) -> None:
    reader = make_reader()
    with pytest.raises(ProtocolError, match="malformed frame"):
        reader.feed(frame)


def test_valid_frames_before_bad_one_are_not_silently_returned() -> None:
    """A bad frame anywhere in a feed aborts it: the caller kills the worker."""
    reader = from_worker_reader()
    with pytest.raises(ProtocolError):
        reader.feed(encode_frame(Done(more=False)) + raw_map(type="nope"))


@pytest.mark.parametrize("direction", sorted(READERS))
@pytest.mark.parametrize("cut", [1, 3, 4, 6])
def test_truncated_frame_leaves_pending(direction: str, cut: int) -> None:
    make_reader, messages = READERS[direction]
    reader = make_reader()
    frame = encode_frame(messages[-1])
    assert cut < len(frame)
    assert reader.feed(frame[:cut]) == []
    assert reader.pending == cut


@pytest.mark.parametrize("code", ["bad_request", "bad_pattern", "engine_error", "io_error", "too_large"])
def test_every_failure_code_accepted(code: str) -> None:
    assert from_worker_reader().feed(encode_frame(Failed(code=code, message="m"))) == [Failed(code=code, message="m")]


@pytest.mark.parametrize("code", ["", "BAD_REQUEST", "internal", "io_error ", "timeout"])
def test_failed_with_unknown_code_refused(code: str) -> None:
    # msgspec does not validate on construction, so the sender can encode it;
    # the receiving reader is the gate.
    frame = encode_frame(Failed(code=code, message="m"))
    with pytest.raises(ProtocolError, match="code"):
        from_worker_reader().feed(frame)
