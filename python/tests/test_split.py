"""The C envelope split (``_plainc.split``): exactly ``protocol.split_envelope``'s answer for the
host's envelope shape, ``None`` for everything else, and the channel uses it only when the
accelerator is on."""

import os
import random
import struct

import msgpack
import pytest

from pyvisor_worker import accel, protocol
from pyvisor_worker.protocol import FrameWriter, ProtocolError, split_envelope
from pyvisor_worker.serve import Channel

split = accel.splitter()
needs_ext = pytest.mark.skipif(split is None, reason="the C accelerator is not built")

IDS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
BODIES = [b"\xc0", msgpack.packb(["math", "sqrt", [2.0], None, "s"]), b"\x91" + b"\x01" * 200]


def envelopes():
    for op in (0, 1, 2, 9, 127):
        for request_id in IDS:
            for body in BODIES:
                yield protocol.encode_envelope(op, request_id, body)


@needs_ext
@pytest.mark.parametrize("payload", list(envelopes()))
def test_the_host_shape_splits_as_split_envelope_does(payload):
    got = split(payload)
    assert got == split_envelope(payload)
    assert [type(x) for x in got] == [int, int, bytes]


def unusual():
    body = msgpack.packb([1])
    yield b""  # nothing
    yield b"\x93"  # a header alone
    yield b"\x93\x01"  # no id
    yield b"\x93\x01\x05"  # no body
    yield b"\x93\x01\xcd\x00"  # a truncated id
    yield b"\x93\x01\xcd\x00\x01"  # an id and no body
    yield b"\x93\x01\xcf" + b"\x00" * 8  # a u64 id and no body
    yield b"\x93\xcc\x01\x05" + body  # an op in a longer form
    yield b"\x93\x01\xff" + body  # a negative id
    yield b"\x93\x01\xd0\x05" + body  # a signed id
    yield b"\x92\x01\x05" + body  # two elements
    yield b"\xdc\x00\x03\x01\x05" + body  # array16 of three
    yield b"\x93\x01\x05" + b"\xc4\x00" + b"x" * 5000  # a payload above 4096 bytes: a view
    yield bytearray(b"\x93\x01\x05\xc0")  # not bytes
    yield memoryview(b"\x93\x01\x05\xc0")


@needs_ext
@pytest.mark.parametrize("payload", list(unusual()))
def test_anything_else_is_left_to_split_envelope(payload):
    assert split(payload) is None


@needs_ext
def test_random_payloads_split_alike_or_are_declined():
    rng = random.Random(7)
    accepted = 0
    for _ in range(20000):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 14)))
        if rng.random() < 0.5:
            payload = b"\x93" + payload
        got = split(payload)
        try:
            want = split_envelope(payload)
        except ProtocolError:
            assert got is None, payload
            continue
        assert got is None or got == want, payload
        accepted += got is not None
    assert accepted > 1000  # the comparison is not vacuous


@pytest.mark.parametrize("pure", [False, True])
def test_the_channel_splits_with_c_unless_the_worker_is_pure(monkeypatch, pure):
    if pure:
        monkeypatch.setenv(accel.PURE_ENV, "1")
    elif split is None:
        pytest.skip("the C accelerator is not built")
    payload = protocol.encode_envelope(1, 300, msgpack.packb(["m", "f", None, None, None]))
    r, w = os.pipe()
    os.write(w, struct.pack(">I", len(payload)) + payload)
    os.close(w)
    try:
        channel = Channel(r, 1 << 20, FrameWriter(w))  # nothing is written
        assert channel.split is (None if pure else split)
        assert channel.next_request() == split_envelope(payload)
    finally:
        os.close(r)
