"""Framing and envelope of the pyvisor wire protocol (``docs/protocol.md``).

A frame is a big-endian ``u32`` payload length followed by the payload, one MessagePack value
``[op, id, body]``. Reading and writing go straight to the pipe fds with ``os.read`` and, for a
frame up to 4 KiB, one ``os.write`` of header and body joined (a small copy is cheaper than an
iovec), for a larger one ``os.writev`` (header and body in one call, the body never copied);
writes are serialised by a lock so that the watch thread (``PONG``) and the interpreter thread
(``OK``/``ERROR``) never interleave their frames.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Any, Optional, Tuple

import msgpack

from . import value

PROTOCOL_VERSION = 1
"""The protocol version this package speaks."""

DEFAULT_MAX_FRAME = 64 * 1024 * 1024
"""Maximum frame payload size when ``PYVISOR_MAX_FRAME`` is not set (64 MiB)."""

# Operation codes ("Operations").
READY = 0
CALL = 1
OK = 2
ERROR = 3
PING = 4
PONG = 5
SHUTDOWN = 6
CALL_METHOD = 7
GET_ATTR = 8
SET_ATTR = 9
RELEASE = 10
STREAM_NEXT = 11
CONTEXT = 12

# Error kinds ("ERROR").
KIND_EXCEPTION = "exception"
KIND_ENCODE = "encode"
KIND_FRAME_TOO_LARGE = "frame_too_large"
KIND_BAD_REQUEST = "bad_request"
KIND_UNKNOWN_OP = "unknown_op"
KIND_REF_NOT_FOUND = "ref_not_found"
KIND_REF_SESSION_MISMATCH = "ref_session_mismatch"
KIND_NOT_ALLOWED = "not_allowed"

# Worker exit statuses ("Worker exit statuses").
EXIT_OK = 0
EXIT_FAILURE = 1
"""Python itself failed, e.g. a ``PYVISOR_PRELOAD`` import."""
EXIT_USAGE = 2
"""Not in the protocol table ("other"): the launch environment is unusable (missing fd variables)."""
EXIT_PROTOCOL = 3
EXIT_VERSION = 4

_LEN = struct.Struct(">I")
_U8 = struct.Struct(">BB")
_U16 = struct.Struct(">BH")
_U32 = struct.Struct(">BI")
_U64 = struct.Struct(">BQ")
_READ_CHUNK = 1 << 20
_ID16 = struct.Struct(">H").unpack_from
_ID32 = struct.Struct(">I").unpack_from
_COPY_BODY = 4096
"""Bodies of payloads up to this size are split off as ``bytes``; larger ones as a view."""
_JOIN_FRAME = 4096
"""Frames up to this size are written joined, with one ``write``; larger ones with ``writev``."""
_HEAD_FIX = struct.Struct(">IBBB")
_HEAD_U8 = struct.Struct(">IBBBB")
_HEAD_U16 = struct.Struct(">IBBBH")
_HEAD_U32 = struct.Struct(">IBBBI")


class ProtocolError(Exception):
    """The peer broke a wire rule: a bad, truncated or oversize frame."""


class FrameTooLarge(ProtocolError):
    """A frame payload above the size limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


def _uint(n: int) -> bytes:
    """The shortest MessagePack encoding of the unsigned integer ``n``."""
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return _U8.pack(0xCC, n)
    if n <= 0xFFFF:
        return _U16.pack(0xCD, n)
    if n <= 0xFFFFFFFF:
        return _U32.pack(0xCE, n)
    return _U64.pack(0xCF, n)


def envelope_header(op: int, request_id: int) -> bytes:
    """The MessagePack bytes of ``[op, id,`` : the envelope without its body."""
    return b"\x93" + _uint(op) + _uint(request_id)


def encode_envelope(op: int, request_id: int, body: bytes) -> bytes:
    """A frame payload ``[op, id, body]`` around an already encoded ``body``."""
    return envelope_header(op, request_id) + body


_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_SINT_WIDTH = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}


def _envelope_uint(payload: bytes, pos: int, what: str) -> Tuple[int, int]:
    """The non-negative MessagePack integer at ``pos`` and the position after it."""
    if pos >= len(payload):
        raise ProtocolError(f"malformed frame: envelope has no {what}")
    marker = payload[pos]
    if marker < 0x80:
        return marker, pos + 1
    width = _UINT_WIDTH.get(marker)
    signed = False
    if width is None:
        width = _SINT_WIDTH.get(marker)
        signed = True
        if width is None:
            raise ProtocolError(f"malformed frame: bad {what}")
    end = pos + 1 + width
    if end > len(payload):
        raise ProtocolError(f"malformed frame: truncated {what}")
    number = int.from_bytes(payload[pos + 1:end], "big", signed=signed)
    if number < 0:
        raise ProtocolError(f"malformed frame: bad {what}")
    return number, end


def split_envelope(payload: bytes) -> Tuple[int, int, Any]:
    """Split a frame payload into ``(op, id, body bytes)`` without decoding the body.

    The channel reader uses this: bodies are decoded on the interpreter thread, where refs are
    resolved in order. Raises ``ProtocolError`` unless the payload starts with a three-element
    array header, a non-negative integer op and id, and has at least one byte of body.
    """
    size = len(payload)
    # The host's own shape first: a fixarray, a fixint op and an id of up to 32 bits.
    if size > 3 and payload[0] == 0x93 and payload[1] < 0x80:
        marker = payload[2]
        if marker < 0x80:
            request_id, pos = marker, 3
        elif marker == 0xCD and size > 5:
            (request_id,), pos = _ID16(payload, 3), 5
        elif marker == 0xCE and size > 7:
            (request_id,), pos = _ID32(payload, 3), 7
        else:
            pos = 0
        if pos:
            return payload[1], request_id, _body(payload, pos)
    if size and payload[0] == 0x93:
        pos = 1
    elif size >= 3 and payload[:3] == b"\xdc\x00\x03":
        pos = 3
    elif size >= 5 and payload[:5] == b"\xdd\x00\x00\x00\x03":
        pos = 5
    else:
        raise ProtocolError("malformed frame: envelope is not [op, id, body]")
    op, pos = _envelope_uint(payload, pos, "op")
    request_id, pos = _envelope_uint(payload, pos, "id")
    if pos >= size:
        raise ProtocolError("malformed frame: envelope has no body")
    return op, request_id, _body(payload, pos)


def _body(payload: bytes, pos: int) -> Any:
    """The body from ``pos`` on: copied out of a small payload (cheaper than a view), a view on
    a large one (never a copy)."""
    return payload[pos:] if len(payload) <= _COPY_BODY else memoryview(payload)[pos:]


def decode_envelope(payload: bytes) -> Tuple[int, int, Any]:
    """Split a frame payload into ``(op, id, body)``; the body is decoded too (refs stay
    ``value.RefHandle``s).

    Raises ``ProtocolError`` when the payload is not a MessagePack ``[op, id, body]`` array.
    """
    op, request_id, body = split_envelope(payload)
    try:
        return op, request_id, value.decode(body)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"malformed frame: {exc}") from None


def check_body(body: Any) -> None:
    """Raise ``ProtocolError`` unless ``body`` is exactly one MessagePack value (ops whose body
    is ignored, like ``PING``)."""
    try:
        msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=_any_ext)
    except Exception as exc:
        raise ProtocolError(f"malformed frame: {exc}") from None


def _any_ext(code: int, data: bytes) -> None:
    return None


class FrameReader:
    """Reads frames from ``fd``, through a buffer of ``buffer_size`` bytes.

    With a buffer, a small frame costs one ``read`` (its length and payload arrive together) and
    frames that arrived together are split without reading again; ``buffered()`` tells whether
    bytes are waiting here, where a ``poll`` on ``fd`` cannot see them. With ``buffer_size=0`` it
    never reads past the frame it returns. Payloads at least ``buffer_size`` long are read straight
    into their own chunks, never through the buffer.
    """

    __slots__ = ("_fd", "_max_frame", "_buffer_size", "_buf", "_pos")

    def __init__(self, fd: int, max_frame: int, buffer_size: int = 64 * 1024) -> None:
        self._fd = fd
        self._max_frame = max_frame
        self._buffer_size = buffer_size
        self._buf = b""
        self._pos = 0

    def buffered(self) -> bool:
        """Whether bytes of a next frame are already buffered."""
        return self._pos < len(self._buf)

    def read(self) -> Optional[bytes]:
        """The payload of the next frame, or ``None`` at a clean end of stream.

        The length is checked against ``max_frame`` before the payload is read. A stream that
        ends inside a frame, or an oversize length, raises ``ProtocolError``.
        """
        buf, pos = self._buf, self._pos
        if pos >= len(buf) and self._buffer_size:
            # Nothing buffered: one read usually brings the whole frame.
            buf = os.read(self._fd, self._buffer_size)
            if not buf:
                return None
            self._buf, self._pos = buf, pos = buf, 0
        if len(buf) - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            end = pos + 4 + size
            if 0 < size <= self._max_frame and end <= len(buf):
                self._pos = end
                return buf[pos + 4:end]
        head = self._take(4, at_boundary=True)
        if head is None:
            return None
        (size,) = _LEN.unpack(head)
        if size > self._max_frame:
            raise FrameTooLarge(size, self._max_frame)
        if size == 0:
            return b""
        return self._take(size, at_boundary=False)

    def _take(self, n: int, at_boundary: bool) -> Optional[bytes]:
        """The next ``n`` bytes; ``None`` at the end of the stream if ``at_boundary`` and nothing
        of them was read."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= n:
            self._pos = pos + n
            return buf[pos:pos + n]
        chunks = [buf[pos:]] if pos < len(buf) else []
        got = len(buf) - pos
        self._buf, self._pos = b"", 0
        while got < n:
            rest = n - got
            want = rest if rest >= self._buffer_size else self._buffer_size
            chunk = os.read(self._fd, want if want <= _READ_CHUNK else _READ_CHUNK)
            if not chunk:
                if got == 0 and at_boundary:
                    return None
                raise ProtocolError(f"end of stream inside a frame ({got} of {n} bytes read)")
            if len(chunk) > rest:
                self._buf, self._pos = chunk, rest
                chunk = chunk[:rest]
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_frame(fd: int, max_frame: int) -> Optional[bytes]:
    """The payload of the next frame on ``fd``, or ``None`` at a clean end of stream; reads
    nothing past that frame (``FrameReader`` with no buffer)."""
    return FrameReader(fd, max_frame, buffer_size=0).read()


def _write_all(fd: int, data: Any) -> None:
    """Write all of the bytes-like ``data`` (not copied: slices are memoryviews)."""
    view = memoryview(data)
    total = len(view)
    written = 0
    while written < total:
        n = os.write(fd, view[written:])
        if n <= 0:  # pragma: no cover - a blocking pipe never writes nothing
            raise BrokenPipeError("write made no progress")
        written += n


def _write_whole(fd: int, frame: bytes) -> None:
    """Write ``frame`` with one ``write``, and the rest if a signal or its size cut it short."""
    written = os.write(fd, frame)
    if written < len(frame):
        _write_all(fd, memoryview(frame)[written:])


def write_frame(fd: int, head: bytes, body: bytes) -> None:
    """Write ``head`` then ``body`` with one ``writev``: the frame is never joined into a copy.

    A blocking pipe takes the whole frame unless a signal interrupts a large write; the rest
    then follows with plain writes.
    """
    written = os.writev(fd, (head, body))
    head_size = len(head)
    if written == head_size + len(body):
        return
    if written < head_size:
        _write_all(fd, memoryview(head)[written:])
        written = head_size
    _write_all(fd, memoryview(body)[written - head_size:])


class FrameWriter:
    """Writes whole frames to ``fd``, one at a time, from any thread.

    ``send`` refuses a payload above ``max_frame`` with ``FrameTooLarge`` before writing anything,
    so the limit is enforced on the sending side too.
    """

    __slots__ = ("_fd", "_max_frame", "_lock")

    def __init__(self, fd: int, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._fd = fd
        self._max_frame = max_frame
        self._lock = threading.Lock()

    @property
    def max_frame(self) -> int:
        return self._max_frame

    def send(self, op: int, request_id: int, body: bytes) -> None:
        """Write the frame ``[op, request_id, body]``; ``body`` is already MessagePack-encoded."""
        header = None
        if op < 0x80 and request_id <= 0xFFFFFFFF:
            # The length prefix and the envelope header in one pack (the shortest id form).
            if request_id < 0x80:
                layout, marker, extra = _HEAD_FIX, None, 3
            elif request_id <= 0xFF:
                layout, marker, extra = _HEAD_U8, 0xCC, 4
            elif request_id <= 0xFFFF:
                layout, marker, extra = _HEAD_U16, 0xCD, 5
            else:
                layout, marker, extra = _HEAD_U32, 0xCE, 7
        else:
            header = envelope_header(op, request_id)
            extra = len(header)
        size = len(body) + extra
        if size > self._max_frame:
            raise FrameTooLarge(size, self._max_frame)
        if header is not None:
            head = _LEN.pack(size) + header
        elif marker is None:
            head = layout.pack(size, 0x93, op, request_id)
        else:
            head = layout.pack(size, 0x93, op, marker, request_id)
        with self._lock:
            if size <= _JOIN_FRAME:
                _write_whole(self._fd, head + body)  # one small copy, one plain write
            else:
                write_frame(self._fd, head, body)

    def send_frame(self, frame: bytes) -> None:
        """Write ``frame``, already complete: length prefix and payload (the C accelerator's
        replies, ``ops.Ops.handle``). Refused with ``FrameTooLarge`` like ``send``."""
        size = len(frame) - 4
        if size > self._max_frame:
            raise FrameTooLarge(size, self._max_frame)
        with self._lock:
            _write_whole(self._fd, frame)
