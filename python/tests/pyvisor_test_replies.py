"""Replies of ``Ops.handle`` in one form, whichever path answered (``test_ops.py``,
``test_plain.py``, ``test_plainc.py``).

``Ops.handle`` answers ``(True, OK body)``, ``(False, error map)`` or, when the C accelerator ran
the call, ``(None, complete OK frame)``. ``as_body_reply`` checks such a frame and turns it into
the ``(True, OK body)`` the Python paths give for the same request. ``Counting`` wraps the C
accelerator to show how often it answered, and how.
"""

import struct

from pyvisor_worker.protocol import OK, envelope_header, split_envelope

__all__ = ["Counting", "as_body_reply", "frame_body"]


def frame_body(frame, request_id):
    """The OK body inside the complete reply ``frame`` (bytes) to ``request_id``, after checking
    its 4-byte length prefix and its envelope ``[OK, request_id, body]`` (in the shortest form,
    as ``FrameWriter.send`` writes it)."""
    assert type(frame) is bytes, type(frame)
    assert len(frame) > 4, frame
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4, (size, len(frame))
    payload = frame[4:]
    op, reply_id, body = split_envelope(payload)
    assert (op, reply_id) == (OK, request_id), (op, reply_id, request_id)
    header = envelope_header(OK, request_id)
    assert payload[:len(header)] == header, payload[:len(header)]
    return bytes(body)


def as_body_reply(reply, request_id):
    """``reply`` with a ``(None, frame)`` turned into ``(True, body)``; other replies as they
    are (an OK body as ``bytes``)."""
    ok, answer = reply
    if ok is None:
        return True, frame_body(answer, request_id)
    if ok:
        return True, bytes(answer)
    return reply


class Counting:
    """An accelerator (``Ops(accelerator=...)``) that counts the kinds of answer of the one it
    wraps: ``declined`` (``None``), ``frame``, ``result`` (``(True, ...)``), ``failure``."""

    def __init__(self, call):
        self.call = call
        self.kinds = {"declined": 0, "frame": 0, "result": 0, "failure": 0}

    def __call__(self, body, request_id, contexts, max_frame):
        answer = self.call(body, request_id, contexts, max_frame)
        if answer is None:
            kind = "declined"
        elif type(answer) is bytes:
            kind = "frame"
        else:
            kind = "result" if answer[0] else "failure"
        self.kinds[kind] += 1
        return answer
