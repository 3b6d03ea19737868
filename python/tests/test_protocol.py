import os
import struct
import threading

import msgpack
import pytest

from pyvisor_worker import PROTOCOL_VERSION, protocol
from pyvisor_worker.protocol import (
    FrameTooLarge,
    FrameWriter,
    ProtocolError,
    check_body,
    decode_envelope,
    encode_envelope,
    envelope_header,
    read_frame,
    split_envelope,
)


@pytest.fixture
def pipe():
    r, w = os.pipe()
    fds = {"r": r, "w": w}
    yield fds
    for fd in fds.values():
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def close_write(pipe):
    os.close(pipe["w"])
    pipe["w"] = None


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def test_constants_match_the_protocol_document():
    assert PROTOCOL_VERSION == 1
    assert (protocol.READY, protocol.CALL, protocol.OK, protocol.ERROR, protocol.PING,
            protocol.PONG, protocol.SHUTDOWN) == (0, 1, 2, 3, 4, 5, 6)
    assert (protocol.CALL_METHOD, protocol.GET_ATTR, protocol.SET_ATTR, protocol.RELEASE,
            protocol.STREAM_NEXT, protocol.CONTEXT) == (7, 8, 9, 10, 11, 12)
    assert (protocol.EXIT_OK, protocol.EXIT_FAILURE, protocol.EXIT_PROTOCOL,
            protocol.EXIT_VERSION) == (0, 1, 3, 4)
    assert protocol.DEFAULT_MAX_FRAME == 64 * 1024 * 1024
    assert {protocol.KIND_EXCEPTION, protocol.KIND_ENCODE, protocol.KIND_FRAME_TOO_LARGE,
            protocol.KIND_BAD_REQUEST, protocol.KIND_UNKNOWN_OP, protocol.KIND_REF_NOT_FOUND,
            protocol.KIND_REF_SESSION_MISMATCH, protocol.KIND_NOT_ALLOWED} == {
        "exception", "encode", "frame_too_large", "bad_request", "unknown_op", "ref_not_found",
        "ref_session_mismatch", "not_allowed"}


@pytest.mark.parametrize("op", [0, 6, 31, 127, 128, 255])
@pytest.mark.parametrize("request_id", [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 64 - 1])
def test_the_envelope_is_what_msgpack_would_write(op, request_id):
    body = msgpack.packb({"a": [1, 2]})
    expected = msgpack.packb([op, request_id, {"a": [1, 2]}])
    assert encode_envelope(op, request_id, body) == expected
    assert envelope_header(op, request_id) + body == expected
    assert decode_envelope(expected) == (op, request_id, {"a": [1, 2]})


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",
    msgpack.packb(None),
    msgpack.packb([1, 2]),
    msgpack.packb([1, 2, 3, 4]),
    msgpack.packb({"op": 1}),
    msgpack.packb([-1, 1, None]),
    msgpack.packb([1, -1, None]),
    msgpack.packb(["1", 1, None]),
    msgpack.packb([1, 1.0, None]),
    msgpack.packb([True, 1, None]),
    msgpack.packb([1, 1, None]) + b"\xc0",
    b"\x93\x01\x01",  # body missing
    b"\x93\x01\x01\xa1\xff",  # invalid UTF-8 in a str
])
def test_a_malformed_envelope_is_a_protocol_error(payload):
    with pytest.raises(ProtocolError):
        decode_envelope(payload)


@pytest.mark.parametrize("op", [0, 12, 127, 128, 255])
@pytest.mark.parametrize("request_id", [0, 1, 127, 128, 65536, 2 ** 32, 2 ** 64 - 1])
def test_split_envelope_leaves_the_body_undecoded(op, request_id):
    body = msgpack.packb({"args": [msgpack.ExtType(42, b"not decoded here")]})
    payload = msgpack.packb([op, request_id, msgpack.unpackb(body)])
    assert split_envelope(payload) == (op, request_id, body)
    assert bytes(split_envelope(payload)[2]) == body


@pytest.mark.parametrize("header", [
    b"\xdc\x00\x03",  # array 16 with three elements
    b"\xdd\x00\x00\x00\x03",  # array 32
])
def test_split_envelope_accepts_long_array_headers_and_signed_ints(header):
    assert split_envelope(header + b"\x01\x05\xc0") == (1, 5, b"\xc0")
    assert split_envelope(b"\x93\xd0\x07\xd3" + (9).to_bytes(8, "big") + b"\xc0") == (7, 9, b"\xc0")


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",
    b"\x92\x01\x02",
    b"\x94\x01\x02\xc0\xc0",
    b"\x93\xff\x01\xc0",  # negative fixint op
    b"\x93\x01\xd0\xff\xc0",  # negative int8 id
    b"\x93\xa1a\x01\xc0",  # string op
    b"\x93\x01\xca\x00\x00\x00\x00\xc0",  # float id
    b"\x93\x01\x01",  # no body
    b"\x93\x01\xcd\x01",  # truncated id
])
def test_split_envelope_refuses_bad_headers(payload):
    with pytest.raises(ProtocolError):
        split_envelope(payload)


def test_check_body_wants_exactly_one_value():
    check_body(b"\xc0")
    check_body(msgpack.packb(msgpack.ExtType(99, b"x")))
    for body in (b"", b"\xc0\xc0", b"\xc1", b"\x92\x01"):
        with pytest.raises(ProtocolError):
            check_body(body)


def test_read_frame_reads_frames_then_none_at_end_of_stream(pipe):
    os.write(pipe["w"], frame(b"abc") + frame(b"") + frame(b"\x00" * 10))
    close_write(pipe)
    assert read_frame(pipe["r"], 1024) == b"abc"
    assert read_frame(pipe["r"], 1024) == b""
    assert read_frame(pipe["r"], 1024) == b"\x00" * 10
    assert read_frame(pipe["r"], 1024) is None


def test_read_frame_accepts_exactly_the_limit_and_refuses_one_more(pipe):
    os.write(pipe["w"], frame(b"x" * 16))
    assert read_frame(pipe["r"], 16) == b"x" * 16
    os.write(pipe["w"], struct.pack(">I", 17))
    close_write(pipe)  # a reader that waited for the payload would hit end of stream instead
    with pytest.raises(FrameTooLarge) as info:
        read_frame(pipe["r"], 16)
    assert (info.value.size, info.value.limit) == (17, 16)
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize("data", [b"\x00\x00", struct.pack(">I", 10) + b"abc"])
def test_end_of_stream_inside_a_frame_is_a_protocol_error(pipe, data):
    os.write(pipe["w"], data)
    close_write(pipe)
    with pytest.raises(ProtocolError):
        read_frame(pipe["r"], 1024)


def test_read_frame_reassembles_partial_reads(monkeypatch, pipe):
    real_read = os.read
    calls = []

    def one_byte_read(fd, n):
        calls.append(n)
        return real_read(fd, 1)

    os.write(pipe["w"], frame(b"hello world"))
    monkeypatch.setattr(os, "read", one_byte_read)
    assert read_frame(pipe["r"], 1024) == b"hello world"
    assert len(calls) == 15


def test_read_frame_waits_for_a_frame_written_in_pieces(pipe):
    payload = bytes(range(256)) * 2048  # 512 KiB: larger than a pipe buffer
    data = frame(payload)

    def writer():
        for i in range(0, len(data), 100_003):
            os.write(pipe["w"], data[i:i + 100_003])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert read_frame(pipe["r"], len(payload)) == payload
    finally:
        thread.join(10)


def read_all_frames(fd):
    frames = []
    while True:
        payload = read_frame(fd, 1 << 30)
        if payload is None:
            return frames
        frames.append(decode_envelope(payload))


def test_frame_writer_writes_whole_frames_and_refuses_oversize_ones(pipe):
    writer = FrameWriter(pipe["w"], max_frame=64)
    writer.send(protocol.OK, 3, msgpack.packb("hi"))
    with pytest.raises(FrameTooLarge) as info:
        writer.send(protocol.OK, 4, msgpack.packb("x" * 64))
    assert info.value.limit == 64
    writer.send(protocol.PONG, 5, b"\xc0")
    close_write(pipe)
    assert read_all_frames(pipe["r"]) == [(protocol.OK, 3, "hi"), (protocol.PONG, 5, None)]


@pytest.mark.parametrize("size", [20, 6000])
@pytest.mark.parametrize("first", [0, 2, 6, 7, 11])
def test_frame_writer_finishes_partial_writes(monkeypatch, pipe, first, size):
    """The first ``write`` (a small frame, joined) or ``writev`` (a large one) is interrupted
    after ``first`` bytes (in the length, the envelope header or the body; the header is 7
    bytes here), then short ``write``s follow: the frame still arrives whole."""
    real_write = os.write
    sizes = []

    def short_first(fd, data):
        data = b"".join(bytes(b) for b in data) if isinstance(data, (list, tuple)) else data
        n = real_write(fd, bytes(data[:first])) if first else 0
        sizes.append(n)
        return n

    def short_write(fd, data):
        if not sizes:
            return short_first(fd, data)
        n = real_write(fd, bytes(data[:7]))
        sizes.append(n)
        return n

    monkeypatch.setattr(os, "writev", short_first)
    monkeypatch.setattr(os, "write", short_write)
    items = list(range(size))
    reader = threading.Thread(target=lambda: sizes.append(read_all_frames(pipe["r"])))
    reader.start()
    FrameWriter(pipe["w"]).send(protocol.OK, 1000, msgpack.packb(items))
    monkeypatch.undo()
    close_write(pipe)
    reader.join()
    assert sizes[-1] == [(protocol.OK, 1000, items)]
    assert sizes[0] == first and len(sizes) > 3


@pytest.mark.parametrize("request_id", [0, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000,
                                        0xFFFFFFFF, 0x100000000, 2**64 - 1])
def test_frame_writer_header_is_the_shortest_envelope(pipe, request_id):
    """The length and envelope header packed in one go equal ``envelope_header``'s bytes."""
    body = msgpack.packb("hi")
    FrameWriter(pipe["w"]).send(protocol.OK, request_id, body)
    close_write(pipe)
    header = protocol.envelope_header(protocol.OK, request_id)
    expected = struct.pack(">I", len(header) + len(body)) + header + body
    assert os.read(pipe["r"], 1 << 16) == expected


def test_frame_writer_refuses_a_body_beyond_the_length_prefix_before_packing(pipe):
    class Huge(bytes):
        def __len__(self):
            return 2**32

    with pytest.raises(FrameTooLarge):
        FrameWriter(pipe["w"]).send(protocol.OK, 1000, Huge(b"x"))


@pytest.mark.parametrize("request_id", [0x7F, 0xFF, 0xFFFF, 0xFFFFFFFF, 2**64 - 1])
def test_an_envelope_without_a_body_is_a_protocol_error_at_every_id_width(request_id):
    with pytest.raises(ProtocolError, match="no body"):
        protocol.split_envelope(protocol.envelope_header(protocol.CALL, request_id))


@pytest.mark.parametrize("request_id", [0, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000,
                                        0xFFFFFFFF, 0x100000000, 2**64 - 1])
@pytest.mark.parametrize("body_size", [1, 5000])
def test_split_envelope_reads_every_id_width(request_id, body_size):
    body = msgpack.packb(b"x" * body_size)
    payload = protocol.encode_envelope(protocol.CALL, request_id, body)
    op, got_id, got_body = protocol.split_envelope(payload)
    assert (op, got_id, bytes(got_body)) == (protocol.CALL, request_id, body)
    # Large bodies are views on the payload, never copies.
    assert isinstance(got_body, memoryview) == (len(payload) > 4096)


def test_frame_writer_sends_header_and_body_in_one_writev(monkeypatch, pipe):
    """A large frame is not joined into one new bytes object: the body goes to ``writev`` as
    is."""
    real_writev = os.writev
    calls = []

    def spy(fd, buffers):
        calls.append(list(buffers))
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", spy)
    body = msgpack.packb(b"x" * 30_000)  # fits in the pipe: nobody reads yet; above _JOIN_FRAME
    FrameWriter(pipe["w"]).send(protocol.OK, 9, body)
    monkeypatch.undo()
    assert len(calls) == 1 and calls[0][1] is body
    assert calls[0][0] == struct.pack(">I", 3 + len(body)) + b"\x93\x02\x09"


def test_frame_writer_never_interleaves_frames_from_threads(pipe):
    """Large frames (partial ``writev``s into a full pipe) and small ones (one joined ``write``)
    from four threads at once: every frame arrives whole."""
    writer = FrameWriter(pipe["w"], max_frame=1 << 20)
    frames_per_thread = 50
    sizes = {0: 70_000, 1: 70_001, 2: 10, 3: 200}
    bodies = {t: msgpack.packb(bytes([t]) * sizes[t]) for t in range(4)}
    received = []

    def reader():
        received.extend(read_all_frames(pipe["r"]))

    read_thread = threading.Thread(target=reader)
    read_thread.start()

    def send_many(t):
        for i in range(frames_per_thread):
            writer.send(protocol.OK, t * 1000 + i, bodies[t])

    threads = [threading.Thread(target=send_many, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    close_write(pipe)
    read_thread.join(30)
    assert len(received) == 4 * frames_per_thread
    for op, request_id, body in received:
        t = request_id // 1000
        assert body == bytes([t]) * sizes[t]


def test_a_buffered_reader_splits_frames_that_arrived_together(pipe):
    reader = protocol.FrameReader(pipe["r"], 1 << 20)
    os.write(pipe["w"], frame(b"one") + frame(b"") + frame(b"three"))
    assert reader.read() == b"one"
    assert reader.buffered()
    assert reader.read() == b""
    assert reader.read() == b"three"
    assert not reader.buffered()
    close_write(pipe)
    assert reader.read() is None


def test_a_buffered_reader_reads_a_frame_larger_than_its_buffer_whole(pipe):
    reader = protocol.FrameReader(pipe["r"], 1 << 20, buffer_size=16)
    big = bytes(range(256)) * 40
    writer = threading.Thread(target=os.write, args=(pipe["w"], frame(big) + frame(b"next")))
    writer.start()
    assert reader.read() == big
    assert reader.read() == b"next"
    writer.join()


@pytest.mark.parametrize("cut", [2, 4, 9])
def test_a_buffered_reader_refuses_a_stream_that_ends_inside_a_frame(pipe, cut):
    reader = protocol.FrameReader(pipe["r"], 1 << 20)
    os.write(pipe["w"], frame(b"whole") + frame(b"torn payload")[:cut])
    close_write(pipe)
    assert reader.read() == b"whole"
    with pytest.raises(ProtocolError, match="end of stream inside a frame"):
        reader.read()


def test_read_frame_never_reads_past_its_frame(pipe):
    os.write(pipe["w"], frame(b"first") + frame(b"second"))
    assert read_frame(pipe["r"], 1 << 20) == b"first"
    assert os.read(pipe["r"], 100) == frame(b"second")
