"""The C accelerator of the plain path, ``pyvisor_worker._plainc`` (``accel.py``): when it is
used, that its decoder gives exactly what msgpack gives, that ``call`` frames scalars exactly as
``FrameWriter.send`` does, hands everything else back, declines without running anything, keeps
reference counts and memory steady, and that a worker serving through it writes the same bytes
as one on the Python paths.

``test_plain.py`` compares the replies of all three paths over a shared set of bodies.
"""

import array
import gc
import math
import os
import random
import struct
import sys
import tempfile
import threading
import tracemalloc
import types

import msgpack
import pytest

import pyvisor_test_helpers as helpers
import pyvisor_test_plainc as fixture
from pyvisor_test_replies import Counting, as_body_reply, frame_body
from pyvisor_worker import _plainc, accel, calls, serve, value
from pyvisor_worker.ops import Ops
from pyvisor_worker.plain import plain_call
from pyvisor_worker.policy import Policy
from pyvisor_worker.protocol import (
    CALL,
    EXIT_OK,
    OK,
    PING,
    SHUTDOWN,
    FrameWriter,
    encode_envelope,
    envelope_header,
)
from pyvisor_worker.refs import Registry

P = "pyvisor_test_plainc"
H = "pyvisor_test_helpers"
C_PATH = accel.available()
MAX_FRAME = 1 << 26


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def call_body(function, args=None, kwargs=None, session=None, module=P):
    """A positional ``CALL`` body, as the host sends it."""
    return pack([module, function, args, kwargs, session])


def c_call(raw, request_id=7, contexts=None, max_frame=MAX_FRAME):
    return _plainc.call(raw, request_id, {} if contexts is None else contexts, max_frame)


def both_paths(raw, request_id=7, **ops_args):
    """The replies of an ``Ops`` with the C accelerator and of one without it (frames turned
    into OK bodies)."""
    c = Ops(Registry(), Policy(), accelerator=C_PATH, **ops_args).handle(CALL, request_id, raw)
    py = Ops(Registry(), Policy(), accelerator=None, **ops_args).handle(CALL, request_id, raw)
    return as_body_reply(c, request_id), py


@pytest.fixture(autouse=True)
def fresh_fixture():
    fixture.RAN.clear()
    fixture.GETATTR_CALLS.clear()
    fixture.KEPT.clear()
    fixture.KEPT_ERROR.__traceback__ = None
    yield
    fixture.RAN.clear()
    fixture.GETATTR_CALLS.clear()
    fixture.KEPT.clear()
    fixture.KEPT_ERROR.__traceback__ = None


# -- selection ---------------------------------------------------------------------------------


def test_the_extension_is_built_and_selected_in_this_environment(monkeypatch):
    monkeypatch.delenv(accel.PURE_ENV, raising=False)
    assert accel.available() is _plainc.call
    assert _plainc.OK == OK
    assert accel.select(Policy()) is _plainc.call
    assert Ops().accelerator is not None


@pytest.mark.parametrize("setting", ["1", " 1 "])
def test_pyvisor_worker_pure_selects_no_accelerator(monkeypatch, setting):
    monkeypatch.setenv(accel.PURE_ENV, setting)
    assert accel.select(Policy()) is None
    assert Ops().accelerator is None
    assert Ops(Registry(), Policy()).accelerator is None


def test_pyvisor_worker_pure_set_to_anything_else_keeps_the_accelerator(monkeypatch):
    monkeypatch.setenv(accel.PURE_ENV, "0")
    assert Ops().accelerator is not None


def test_an_allowlist_selects_no_accelerator_even_when_one_is_passed(monkeypatch):
    monkeypatch.delenv(accel.PURE_ENV, raising=False)
    policy = Policy(["math"])
    assert accel.select(policy) is None
    assert Ops(Registry(), policy).accelerator is None
    assert Ops(Registry(), policy, accelerator=C_PATH).accelerator is None
    assert Ops(Registry(), Policy(), accelerator=None).accelerator is None


def test_a_stale_build_speaking_another_protocol_is_not_used(monkeypatch):
    monkeypatch.setattr(accel, "_plainc", types.SimpleNamespace(OK=OK + 1, call=_plainc.call))
    assert accel.available() is None
    monkeypatch.setattr(accel, "_plainc", None)
    assert accel.available() is None


# -- the decoder ---------------------------------------------------------------------------------


class ExtSeen(Exception):
    pass


def no_ext(code, data):
    raise ExtSeen(code)


def reference(raw):
    """What the Python plain path decodes: ``msgpack.unpackb`` refusing every ext value."""
    return msgpack.unpackb(raw, raw=False, ext_hook=no_ext)


def same(a, b):
    """Equal and of the same types all the way down (floats by their bits, keys included, in
    order)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    return a == b


def assert_decodes_like_msgpack(raw):
    got = _plainc.decode(raw)
    assert got is not None, raw[:40]
    assert type(got) is tuple and len(got) == 1
    assert same(got[0], reference(raw)), raw[:40]


def hand(marker_format, marker, *fields, data=b""):
    """A value written by hand: a marker, its fixed-width fields, then ``data``."""
    return struct.pack(">B" + marker_format, marker, *fields) + data


INTS = [
    # fixint, negative fixint
    b"\x00", b"\x01", b"\x7f", b"\xff", b"\xe0",
    # uint 8/16/32/64: the limits, and small values in wide forms (not the shortest)
    hand("B", 0xCC, 0), hand("B", 0xCC, 0x80), hand("B", 0xCC, 0xFF),
    hand("H", 0xCD, 0), hand("H", 0xCD, 0x100), hand("H", 0xCD, 0xFFFF),
    hand("I", 0xCE, 0), hand("I", 0xCE, 0x10000), hand("I", 0xCE, 0xFFFFFFFF),
    hand("Q", 0xCF, 0), hand("Q", 0xCF, 2 ** 32), hand("Q", 0xCF, 2 ** 63 - 1),
    hand("Q", 0xCF, 2 ** 63), hand("Q", 0xCF, 2 ** 64 - 1),
    # int 8/16/32/64: both limits, -1, 0 and positive values in signed forms
    hand("b", 0xD0, -128), hand("b", 0xD0, -33), hand("b", 0xD0, -1), hand("b", 0xD0, 0),
    hand("b", 0xD0, 127),
    hand("h", 0xD1, -32768), hand("h", 0xD1, -129), hand("h", 0xD1, 32767), hand("h", 0xD1, -1),
    hand("i", 0xD2, -(2 ** 31)), hand("i", 0xD2, -32769), hand("i", 0xD2, 2 ** 31 - 1),
    hand("i", 0xD2, -1),
    hand("q", 0xD3, -(2 ** 63)), hand("q", 0xD3, -(2 ** 31) - 1), hand("q", 0xD3, 2 ** 63 - 1),
    hand("q", 0xD3, -1), hand("q", 0xD3, 0),
] + [pack(n) for n in [
    0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 63),
]]

FLOAT32_BITS = [
    0x00000000, 0x80000000, 0x3F800000, 0xBFC00000, 0x7F7FFFFF, 0x00000001, 0x007FFFFF,
    0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0x7FC00123,
]
FLOAT64_BITS = [
    0x0000000000000000, 0x8000000000000000, 0x3FF0000000000000, 0xC002000000000000,
    0x7FEFFFFFFFFFFFFF, 0x0000000000000001, 0x000FFFFFFFFFFFFF, 0x7FF0000000000000,
    0xFFF0000000000000, 0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001,
    0x7FF7FFFFFFFFFFFF, 0x7FF8000000000123,
]
FLOATS = (
    [hand("I", 0xCA, bits) for bits in FLOAT32_BITS]
    + [hand("Q", 0xCB, bits) for bits in FLOAT64_BITS]
    + [pack(x) for x in [0.0, -0.0, 1.5, 1e308, -5e-324, math.inf, -math.inf, math.nan]]
    + [msgpack.packb(x, use_single_float=True) for x in [0.0, -0.0, 1.5, math.inf, math.nan]]
)

TEXT = "\u00e9t\u00e9 \U0001F600 \u20ac"


def utf8_of(n_bytes):
    """A str whose UTF-8 form is exactly ``n_bytes`` long, with multi-byte characters."""
    head = TEXT.encode()[:min(n_bytes, len(TEXT.encode()))]
    while True:
        try:
            text = head.decode()
            break
        except UnicodeDecodeError:
            head = head[:-1]
    return text + "x" * (n_bytes - len(text.encode()))


def str_forms(text):
    """``text`` as fixstr (if short enough), str8, str16 and str32, written by hand."""
    data = text.encode()
    n = len(data)
    forms = [hand("B", 0xD9, n, data=data)] if n < 256 else []
    if n < 32:
        forms.append(bytes([0xA0 | n]) + data)
    if n < 65536:
        forms.append(hand("H", 0xDA, n, data=data))
    forms.append(hand("I", 0xDB, n, data=data))
    return forms


def bin_forms(data):
    n = len(data)
    forms = [hand("B", 0xC4, n, data=data)] if n < 256 else []
    if n < 65536:
        forms.append(hand("H", 0xC5, n, data=data))
    forms.append(hand("I", 0xC6, n, data=data))
    return forms


STRINGS = [form for text in ["", "a", "x" * 31, utf8_of(32), utf8_of(255), utf8_of(256),
                             utf8_of(65535), utf8_of(65536), TEXT, "\x00", "\U0010FFFF"]
           for form in str_forms(text)]
STRINGS += [pack(utf8_of(n)) for n in [0, 31, 32, 255, 256, 65535, 65536]]
BINS = [form for data in [b"", b"\x00", bytes(range(256)), b"b" * 65535, b"b" * 65536]
        for form in bin_forms(data)]
BINS += [pack(b"b" * n) for n in [0, 255, 256, 65535, 65536]]


def array_forms(items):
    data = b"".join(pack(item) for item in items)
    n = len(items)
    forms = [bytes([0x90 | n]) + data] if n < 16 else []
    return forms + [hand("H", 0xDC, n, data=data), hand("I", 0xDD, n, data=data)]


def map_forms(pairs):
    data = b"".join(pack(k) + pack(v) for k, v in pairs)
    n = len(pairs)
    forms = [bytes([0x80 | n]) + data] if n < 16 else []
    return forms + [hand("H", 0xDE, n, data=data), hand("I", 0xDF, n, data=data)]


CONTAINERS = [
    *array_forms([]), *array_forms([1, "a", None]), *array_forms(list(range(20))),
    *map_forms([]), *map_forms([("a", 1), (b"b", [2.5, None])]),
    *map_forms([(f"k{i}", i) for i in range(20)]),
    pack(list(range(65536))),  # array32 as msgpack writes it
    pack({f"k{i}": i for i in range(65536)}),  # map32
    pack([[], {}, [[]], {"a": {"b": {"c": [1, [2, [3]]]}}}, [b"x", True, False, None]]),
    pack({"module": "m", "function": "f", "args": [1.5], "kwargs": {"k": "v"},
          "session": None, "modules": 1, "modul": 2, "args2": 3, b"module": 4}),
    # duplicate keys: the last value wins, at the first key's place
    b"\x83\xa1a\x01\xa1b\x02\xa1a\x03",
    b"\x82\xa6module\x01\xa6module\x02",
    b"\x82\xc4\x01k\x01\xc4\x01k\x02",
    b"\x82\xa1k\x01\xc4\x01k\x02",  # a str and a bytes key: two keys
]
PLAIN_VALUES = [b"\xc0", b"\xc2", b"\xc3"] + INTS + FLOATS + STRINGS + BINS + CONTAINERS


def test_the_corpus_covers_every_marker_the_decoder_takes():
    firsts = {raw[0] for raw in PLAIN_VALUES}
    plain_markers = set(range(0x00, 0xC1)) | set(range(0xC2, 0xC7)) | set(range(0xCA, 0xD4)) \
        | set(range(0xD9, 0x100))
    fix_ranges = set(range(0x00, 0x80)) | set(range(0x80, 0x90)) | set(range(0x90, 0xA0)) \
        | set(range(0xA0, 0xC0)) | set(range(0xE0, 0x100))
    assert plain_markers - fix_ranges <= firsts


@pytest.mark.parametrize("raw", PLAIN_VALUES, ids=lambda raw: raw[:6].hex())
def test_the_decoder_gives_what_msgpack_gives(raw):
    assert_decodes_like_msgpack(raw)


def test_every_one_byte_body_decodes_like_msgpack_or_is_declined():
    for marker in range(256):
        raw = bytes([marker])
        try:
            want = (reference(raw),)
        except Exception:
            want = None
        got = _plainc.decode(raw)
        if want is None:
            assert got is None, raw
        else:
            assert got is not None and same(got[0], want[0]), raw


def test_duplicate_map_keys_keep_the_last_value():
    assert _plainc.decode(b"\x83\xa1a\x01\xa1b\x02\xa1a\x03") == ({"a": 3, "b": 2},)
    assert list(_plainc.decode(b"\x83\xa1a\x01\xa1b\x02\xa1a\x03")[0]) == ["a", "b"]


def test_str_map_keys_are_interned_as_msgpack_interns_them():
    names = [sys.intern("".join(["an unusual ", "key ", str(i)])) for i in range(3)]
    names.append(sys.intern("module"))
    raw = pack({name: i for i, name in enumerate(names)})
    raw_str8 = b"\x81" + hand("B", 0xD9, 6, data=b"module") + b"\x01"  # not a fixstr
    for got, want in [(_plainc.decode(raw)[0], reference(raw)),
                      (_plainc.decode(raw_str8)[0], reference(raw_str8))]:
        for key, reference_key in zip(got, want):
            assert key is reference_key and key is sys.intern(key)
    assert list(_plainc.decode(raw)[0]) == names and all(
        key is name for key, name in zip(_plainc.decode(raw)[0], names))
    assert list(_plainc.decode(pack([{"x": {"an unusual key 0": 1}}]))[0][0]["x"])[0] is names[0]


def random_value(rng, depth=0):
    kind = rng.randrange(11 if depth < 4 else 7)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([rng.randint(-(2 ** 63), 2 ** 64 - 1), rng.randint(-40, 300),
                           rng.randint(-(2 ** 31), 2 ** 32)])
    if kind == 2:
        return rng.choice([rng.random() * 10 ** rng.randint(-8, 8), -rng.random(),
                           math.inf, math.nan])
    if kind == 3:
        return "".join(rng.choice("ab\u00e9\u20ac\U0001F600") for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.choice(["module", "function", "args", "kwargs", "session", "", "x" * 40])
    if kind == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(10)))
    if kind == 6:
        return rng.choice([b"", b"x" * 300, "y" * 300])
    if kind in (7, 8):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    keys = ["module", "function", "args", "k", "\u00e9", b"k", b"\x00"]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randrange(6))}


def test_random_nested_values_decode_like_msgpack():
    rng = random.Random(20240611)
    for _ in range(3000):
        raw = msgpack.packb(random_value(rng), use_bin_type=True,
                            use_single_float=rng.random() < 0.25)
        assert_decodes_like_msgpack(raw)


def test_randomly_damaged_values_decode_like_msgpack_or_are_declined():
    """A damaged body either decodes to what msgpack gives, or is declined; it never decodes to
    anything msgpack would not give."""
    rng = random.Random(7)
    declined = 0
    for _ in range(3000):
        raw = bytearray(pack(random_value(rng)))
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        raw = bytes(raw)
        got = _plainc.decode(raw)
        if got is None:
            declined += 1
            continue
        assert same(got[0], reference(raw)), raw.hex()
    assert 100 < declined < 2900


EXTS = [msgpack.packb(msgpack.ExtType(5, b"x" * n)) for n in [1, 2, 4, 8, 16, 0, 3, 300, 70000]]
TIMESTAMPS = [msgpack.packb(msgpack.Timestamp(*t)) for t in [(1, 0), (1, 5), (2 ** 34, 1)]]


def test_the_ext_corpus_covers_every_ext_marker():
    assert {raw[0] for raw in EXTS} == {0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}
    assert {raw[0] for raw in TIMESTAMPS} == {0xD6, 0xD7, 0xC7}


@pytest.mark.parametrize("raw", EXTS + TIMESTAMPS, ids=lambda raw: raw[:3].hex())
def test_ext_values_are_declined_anywhere_in_a_body(raw):
    for body in [raw, b"\x91" + raw, b"\x81\xa1k" + raw, pack([1, [2, {"a": 3}]])[:-1] + raw]:
        assert _plainc.decode(body) is None
        assert c_call(body) is None


def test_the_never_used_marker_is_declined():
    for raw in [b"\xc1", b"\x91\xc1", b"\x81\xa1k\xc1", b"\x81\xc1\x01"]:
        assert _plainc.decode(raw) is None
        with pytest.raises(Exception):
            reference(raw)


CUT_BODIES = [
    call_body("ident", [[1, 2.5, "\u00e9", b"b", None, True, {"k": [1]}]], {"x": 1}, "s"),
    pack({"module": "m", "function": "f", "args": [2 ** 64 - 1, -(2 ** 63), 1.5]}),
    b"\xdc\x00\x0c" + b"".join(INTS[:12]),  # an array16 of ints in every width
    hand("I", 0xDB, 4, data=b"\xe2\x82\xacx"), hand("I", 0xC6, 3, data=b"abc"),
    hand("I", 0xDF, 1, data=b"\xa1k\xca\x3f\x80\x00\x00"),
]


@pytest.mark.parametrize("raw", CUT_BODIES, ids=lambda raw: raw[:4].hex())
def test_input_cut_at_any_point_is_declined(raw):
    assert_decodes_like_msgpack(raw)
    for cut in range(len(raw)):
        assert _plainc.decode(raw[:cut]) is None, cut
        with pytest.raises(Exception):
            reference(raw[:cut])


@pytest.mark.parametrize("raw", CUT_BODIES, ids=lambda raw: raw[:4].hex())
def test_trailing_data_after_the_value_is_declined(raw):
    for extra in [b"\xc0", b"\x00", raw]:
        assert _plainc.decode(raw + extra) is None
        with pytest.raises(msgpack.ExtraData):
            reference(raw + extra)


@pytest.mark.parametrize("data", [
    b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xc3", b"a\xe2\x82", b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
])
def test_invalid_utf8_in_a_str_is_declined(data):
    for raw in [bytes([0xA0 | len(data)]) + data, hand("B", 0xD9, len(data), data=data),
                hand("I", 0xDB, len(data), data=data),
                b"\x81" + bytes([0xA0 | len(data)]) + data + b"\x01"]:
        assert _plainc.decode(raw) is None
        with pytest.raises(Exception):
            reference(raw)
    assert _plainc.decode(bytes([0xC4, len(data)]) + data) == (data,)  # fine as bin


@pytest.mark.parametrize("key", [b"\x01", b"\xff", b"\xc0", b"\xc3", b"\xcb" + bytes(8),
                                 b"\x91\x01", b"\x90", b"\x80", b"\xcf" + bytes(8)])
def test_map_keys_other_than_str_and_bytes_are_declined(key):
    for raw in [b"\x81" + key + b"\x01", b"\x91\x81" + key + b"\xc0",
                b"\x82\xa1a\x01" + key + b"\x02"]:
        assert _plainc.decode(raw) is None
        with pytest.raises(ValueError):
            reference(raw)


def nested(depth, kind):
    """``depth`` containers, one inside the other, around a 1."""
    raw = b"\x01"
    for level in range(depth):
        if kind == "array" or (kind == "mixed" and level % 2):
            raw = b"\x91" + raw
        else:
            raw = b"\x81\xa1k" + raw
    return raw


@pytest.mark.parametrize("kind", ["array", "map", "mixed"])
def test_nesting_up_to_64_decodes_like_msgpack_and_deeper_is_declined(kind):
    for depth in [1, 2, 63, 64]:
        assert_decodes_like_msgpack(nested(depth, kind))
    for depth in [65, 66, 200, 1000]:
        raw = nested(depth, kind)
        assert _plainc.decode(raw) is None
        assert reference(raw) is not None  # msgpack itself takes it: the Python path decides
    assert _plainc.decode(b"\x91" * 64 + b"\x90") is None  # 65 levels, the last one empty
    assert_decodes_like_msgpack(b"\x91" * 63 + b"\x90")


@pytest.mark.parametrize("raw", [
    b"\xa5abc", hand("B", 0xD9, 10, data=b"abc"), hand("H", 0xDA, 10, data=b"abc"),
    hand("I", 0xDB, 0xFFFFFFFF, data=b"abc"), hand("B", 0xC4, 4, data=b"abc"),
    hand("H", 0xC5, 300, data=b"abc"), hand("I", 0xC6, 0xFFFFFFFF, data=b"abc"),
    b"\x93\x01\x02", hand("H", 0xDC, 4, data=b"\x01\x02\x03"),
    hand("I", 0xDD, 0xFFFFFFFF, data=b"\x01\x02\x03"), b"\x82\xa1a\x01",
    hand("H", 0xDE, 2, data=b"\xa1a\x01"), hand("I", 0xDF, 0xFFFFFFFF, data=b"\xa1a\x01\xa1b\x02"),
    hand("I", 0xDF, 0x80000000, data=b""), hand("I", 0xDD, 0x80000000, data=b""),
])
def test_lengths_beyond_the_remaining_input_are_declined(raw):
    assert _plainc.decode(raw) is None
    assert _plainc.decode(b"\x91" + raw) is None
    with pytest.raises(Exception):
        reference(raw)


def test_a_memoryview_decodes_as_the_bytes_it_shows():
    raws = [CUT_BODIES[0], pack([b"z" * 5000, {"k": "\u00e9" * 3000}]), b"\xc0"]
    for raw in raws:
        want = _plainc.decode(raw)
        assert _plainc.decode(memoryview(raw)) == want
        framed = b"\x93\x01\xcd\x10\x00" + raw + b"\xc1\xc1"  # a slice of a larger buffer
        view = memoryview(framed)[5:5 + len(raw)]
        assert _plainc.decode(view) == want
        assert _plainc.decode(memoryview(bytearray(raw))) == want
    assert _plainc.decode(memoryview(b"\x92\x01\x02\x03")[:3]) == ([1, 2],)
    assert _plainc.decode(memoryview(b"\x92\x01\x02\x03")[:2]) is None  # the view ends there


@pytest.mark.parametrize("raw", [
    call_body("ident", [[1, "x" * 5000]]), call_body("ident", [1.5]), call_body("raise_kept"),
    call_body("NS.record"), call_body("ident", [1])[:-1], b"\x91\xc1",
])
def test_a_memoryview_body_is_released_by_every_answer(raw):
    view = memoryview(bytearray(raw))
    c_call(view)
    _plainc.decode(view)
    view.release()  # BufferError if the call still held its buffer
    fixture.KEPT_ERROR.__traceback__ = None


def test_bodies_that_are_neither_bytes_nor_a_byte_view_are_declined():
    raw = pack([1, 2])
    assert _plainc.decode(bytearray(raw)) is None  # the Python paths take these
    assert _plainc.decode(array.array("i", [0x0102, 0x0304])) is None
    assert _plainc.decode(memoryview(array.array("i", [0x0192]))) is None  # 4-byte items
    assert _plainc.decode(memoryview(raw * 2)[::2]) is None  # not contiguous
    assert _plainc.decode("\x92\x01\x02") is None
    assert _plainc.decode(None) is None
    released = memoryview(raw)
    released.release()
    assert _plainc.decode(released) is None


# -- call(): results ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame_file():
    with tempfile.TemporaryFile() as f:
        yield f


def written_by_frame_writer(frame_file, request_id, result):
    """The bytes ``FrameWriter.send(OK, request_id, encode_scalar(result))`` writes."""
    fd = frame_file.fileno()
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    FrameWriter(fd, MAX_FRAME).send(OK, request_id, value.encode_scalar(result))
    os.lseek(fd, 0, os.SEEK_SET)
    return frame_file.read()


NAN_PAYLOAD = struct.unpack(">d", bytes.fromhex("7ff8000000000123"))[0]
SCALARS = [
    0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf, math.nan, NAN_PAYLOAD,
    0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1, 2 ** 63,
    2 ** 64 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1,
    -(2 ** 63),
    "", "a", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "x" * 65535, "x" * 65536,
    utf8_of(31), utf8_of(32), utf8_of(255), utf8_of(256), utf8_of(65535), utf8_of(65536),
    "\U0001F600" * 20000,
    b"", b"\x00", b"x" * 255, b"x" * 256, b"x" * 65535, b"x" * 65536,
    True, False, None,
]
REQUEST_IDS = [0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 64 - 1]


@pytest.mark.parametrize("request_id", REQUEST_IDS)
def test_a_scalar_result_comes_back_as_the_frame_frame_writer_writes(frame_file, request_id):
    for result in SCALARS:
        frame = c_call(call_body("ident", [result]), request_id)
        assert type(frame) is bytes, result
        assert frame == written_by_frame_writer(frame_file, request_id, result), result
        assert same(value.decode(frame_body(frame, request_id)), result)


def test_the_map_form_and_a_memoryview_body_give_the_same_frame():
    positional = call_body("plus", None, {"a": 2, "b": 40}, "s")
    frame = c_call(positional, 1000)
    assert value.decode(frame_body(frame, 1000)) == 42
    as_map = pack({"session": "s", "kwargs": {"b": 40, "a": 2}, "function": "plus", "module": P,
                   "extra": [1]})
    assert c_call(as_map, 1000) == frame
    assert c_call(memoryview(b"\x00" + positional + b"\x00")[1:-1], 1000) == frame


@pytest.mark.parametrize("function, args", [
    ("const_float", None), ("const_str", None), ("sized_str", [70000, "\u20ac"]),
    ("sized_bytes", [300]), ("plus", [2 ** 63, 2 ** 63 - 1]), ("nothing", [1, 2]),
])
def test_results_made_by_the_function_are_framed_too(frame_file, function, args):
    frame = c_call(call_body(function, args), 300)
    result = getattr(fixture, function)(*(args or []))
    assert frame == written_by_frame_writer(frame_file, 300, result)


@pytest.mark.parametrize("function, args, want", [
    ("plus", [2 ** 64 - 1, 1], 2 ** 64),  # above the uint64 range
    ("plus", [-(2 ** 63), -1], -(2 ** 63) - 1),  # below the int64 range
    ("const_big", None, fixture.CONST_BIG),
    ("surrogate", None, "\ud800"),
    ("sub_str", None, "sub"), ("sub_int", None, 7), ("sub_float", None, 2.5),
])
def test_a_scalar_the_frame_cannot_hold_as_is_comes_back_as_the_result(function, args, want):
    for session in [None, "s9"]:
        ok, result, got_session = c_call(call_body(function, args, session=session))
        assert ok is True and got_session == session
        assert result == want and type(result) is type(getattr(fixture, function)(*(args or [])))
        assert value.encode_scalar(result) is None  # the encoder decides, on every path


@pytest.mark.parametrize("function", ["const_list", "const_dict", "returns_object", "const_big"])
def test_a_non_scalar_result_comes_back_as_the_very_object(function):
    ok, result, session = c_call(call_body(function, session="s"))
    assert ok is True and session == "s"
    if function.startswith("const_"):
        assert result is getattr(fixture, function.upper())
    else:
        assert type(result) is object


@pytest.mark.parametrize("function, args", [
    ("const_list", None), ("sub_str", None), ("surrogate", None), ("plus", [2 ** 64 - 1, 1]),
    ("returns_object", None),
])
def test_results_handed_back_get_the_python_paths_reply(function, args):
    c, py = both_paths(call_body(function, args, session="s"))
    assert c == py


@pytest.mark.parametrize("request_id", [5, 300, 2 ** 40])
@pytest.mark.parametrize("result", ["x" * 100, b"y" * 70000, 2 ** 64 - 1, 1.5, None])
def test_a_frame_above_max_frame_is_left_to_ops_which_answers_as_the_python_path(
        request_id, result):
    raw = call_body("ident", [result])
    size = len(envelope_header(OK, request_id)) + len(value.encode_scalar(result))
    frame = c_call(raw, request_id, max_frame=size)
    assert len(frame) == 4 + size
    answer = c_call(raw, request_id, max_frame=size - 1)
    assert type(answer) is tuple and answer[0] is True and same(answer[1], result)
    c, py = both_paths(raw, request_id, max_frame=size - 1)
    assert c == py
    assert c[0] is False and c[1]["kind"] == "frame_too_large", c
    c, py = both_paths(raw, request_id, max_frame=size)
    assert c == py and c[0] is True


# -- call(): failures ---------------------------------------------------------------------------


def test_a_python_function_that_raises_gives_the_exception_with_its_traceback():
    ok, exc, session = c_call(call_body("boom", ["no"], session="s", module=H))
    assert ok is False and type(exc) is helpers.Outer.Boom and session == "s"
    assert exc.__traceback__.tb_frame.f_code is helpers.boom.__code__
    c, py = both_paths(call_body("boom", ["no"], module=H))
    assert c == py and c[1]["kind"] == "exception" and "in boom" in c[1]["traceback"]


def test_a_c_function_that_raises_gets_the_traceback_entry_of_the_python_path():
    ok, exc, session = c_call(call_body("sqrt", [-1.0], module="math"))
    assert ok is False and type(exc) is ValueError and exc.__traceback__ is None
    c, py = both_paths(call_body("sqrt", [-1.0], module="math"))
    assert c == py
    assert c[1]["type"] == "ValueError" and "_apply" in c[1]["traceback"]


def test_the_module_getattr_runs_once_per_call_when_it_returns():
    frame = c_call(call_body("lazy", [5]))
    assert type(frame) is bytes and value.decode(frame_body(frame, 7)) == 5
    assert fixture.GETATTR_CALLS == ["lazy"]
    for _ in range(9):
        c_call(call_body("lazy", [5]))
    assert fixture.GETATTR_CALLS == ["lazy"] * 10


def test_the_module_getattr_runs_once_per_call_when_it_raises():
    ok, exc, _ = c_call(call_body("lazy_fails"))
    assert ok is False and type(exc) is ValueError and str(exc) == "__getattr__ failed"
    assert fixture.GETATTR_CALLS == ["lazy_fails"]
    c, py = both_paths(call_body("lazy_fails"))
    assert c == py and "__getattr__" in c[1]["traceback"]
    assert fixture.GETATTR_CALLS == ["lazy_fails"] * 3  # c_call, then one each path


@pytest.mark.parametrize("module, function", [(P, "not_there"), ("math", "not_there")])
def test_a_missing_attribute_gives_the_python_paths_error(module, function):
    ok, exc, _ = c_call(call_body(function, module=module))
    assert ok is False and type(exc) is AttributeError
    assert str(exc) == f"module {module!r} has no attribute {function!r}"
    c, py = both_paths(call_body(function, module=module))
    assert c == py and c[1]["message"] == str(exc)
    if module == P:
        assert fixture.GETATTR_CALLS == [function] * 3


def test_system_exit_from_the_function_is_an_error_reply_not_an_exit():
    ok, exc, _ = c_call(call_body("system_exit"))
    assert ok is False and type(exc) is SystemExit and exc.code == 3
    c, py = both_paths(call_body("system_exit"))
    assert c == py and c[1]["type"] == "SystemExit"


@pytest.mark.parametrize("function", ["interrupt", "lazy_interrupt"])
def test_keyboard_interrupt_propagates(function):
    with pytest.raises(KeyboardInterrupt):
        c_call(call_body(function))
    with pytest.raises(KeyboardInterrupt):
        Ops(Registry(), Policy(), accelerator=C_PATH).handle(CALL, 1, call_body(function))


def test_the_function_runs_without_a_python_frame_of_the_worker():
    frame = c_call(call_body("caller"))
    assert value.decode(frame_body(frame, 7)) == "c_call"


# -- call(): declines -----------------------------------------------------------------------------


def assert_declined_without_running(raw, request_id=7, contexts=None, max_frame=MAX_FRAME):
    assert _plainc.call(raw, request_id, {} if contexts is None else contexts, max_frame) is None
    assert fixture.RAN == [] and fixture.KEPT == [] and fixture.GETATTR_CALLS == []


def test_the_record_fixture_shows_a_call_that_ran():
    frame = c_call(call_body("record", ["x"]))
    assert value.decode(frame_body(frame, 7)) == "x" and fixture.RAN == ["x"]


def test_builtins_is_declined(monkeypatch):
    import builtins

    monkeypatch.setattr(builtins, "pyvisor_test_record", fixture.record, raising=False)
    assert_declined_without_running(call_body("pyvisor_test_record", module="builtins"))
    assert_declined_without_running(call_body("len", [[1]], module="builtins"))


def test_a_dotted_function_name_is_declined():
    assert_declined_without_running(call_body("NS.record"))
    c, py = both_paths(call_body("NS.record", ["dotted"]))
    assert c == py and fixture.RAN == ["dotted", "dotted"]


def test_a_module_not_imported_yet_is_declined_and_then_imported_by_the_python_path():
    name = "pyvisor_test_plainc_unimported"
    sys.modules.pop(name, None)
    try:
        assert_declined_without_running(call_body("answer", module=name))
        assert name not in sys.modules
        ok, reply = as_body_reply(
            Ops(Registry(), Policy(), accelerator=C_PATH).handle(CALL, 3,
                                                                  call_body("answer", module=name)),
            3)
        assert ok and value.decode(reply) == 42
        assert sys.modules[name].IMPORTS == [name]
        frame = c_call(call_body("answer", module=name))  # imported now: the C path takes it
        assert value.decode(frame_body(frame, 7)) == 42
    finally:
        sys.modules.pop(name, None)


class ModuleSubclass(types.ModuleType):
    pass


@pytest.mark.parametrize("make", [
    lambda: types.SimpleNamespace(record=fixture.record),
    lambda: fixture.NS,
    lambda: (lambda m: (setattr(m, "record", fixture.record), m)[1])(ModuleSubclass("sub")),
])
def test_a_sys_modules_entry_that_is_not_a_plain_module_is_declined(monkeypatch, make):
    name = "pyvisor_test_not_a_module"
    monkeypatch.setitem(sys.modules, name, make())
    assert_declined_without_running(call_body("record", ["odd"], module=name))
    c, py = both_paths(call_body("record", ["odd"], module=name))
    assert c == py and fixture.RAN == ["odd", "odd"]


def test_a_sys_modules_entry_of_none_is_declined(monkeypatch):
    name = "pyvisor_test_blocked"
    monkeypatch.setitem(sys.modules, name, None)
    assert_declined_without_running(call_body("record", module=name))
    c, py = both_paths(call_body("record", module=name))
    assert c == py and c[1]["type"] == "ModuleNotFoundError"


def test_a_session_with_contexts_is_declined():
    raw = call_body("record", ["ctx"], session="s1")
    assert_declined_without_running(raw, contexts={"s1": [object()]})
    assert type(c_call(raw, contexts={"s2": [object()]})) is bytes  # another session's
    assert fixture.RAN == ["ctx"]


@pytest.mark.parametrize("request_id", [-1, 2 ** 64, "1", 1.0, True, None, b"\x01"])
def test_a_request_id_that_is_not_a_u64_is_declined(request_id):
    assert_declined_without_running(call_body("record"), request_id=request_id)


@pytest.mark.parametrize("max_frame", [1.5, "100", None, True, 2 ** 64])
def test_a_max_frame_that_is_not_an_int_is_declined(max_frame):
    assert_declined_without_running(call_body("record"), max_frame=max_frame)


@pytest.mark.parametrize("contexts", [None, [], {"s": 1}.items()])
def test_a_session_call_with_contexts_of_another_type_is_declined(contexts):
    raw = call_body("record", session="s")
    assert _plainc.call(raw, 7, contexts, MAX_FRAME) is None
    assert fixture.RAN == []


@pytest.mark.parametrize("body", [
    [P, "record"], [P, "record", None, None, None, None], [P, "", None, None, None],
    ["", "record", None, None, None], [b"m", "record", None, None, None],
    [P, b"record", None, None, None], [P, "record", {"a": 1}, None, None],
    [P, "record", None, [1], None], [P, "record", None, {b"k": 1}, None],
    [P, "record", None, None, 5], [P, "record", None, None, b"s"],
    {"module": P}, {"function": "record"}, {"module": P, "function": "record", "args": "x"},
    "record", 5, None,
])
def test_bodies_the_plain_path_declines_are_declined(body):
    raw = pack(body)
    assert_declined_without_running(raw)
    assert plain_call(raw, {}) is None


def test_call_takes_exactly_four_arguments():
    with pytest.raises(TypeError):
        _plainc.call(call_body("record"), 7, {})
    with pytest.raises(TypeError):
        _plainc.call(call_body("record"), 7, {}, MAX_FRAME, None)
    assert fixture.RAN == []


# -- reference counts and memory ----------------------------------------------------------------


def refcount_changes(objects, run, times=10_000):
    """How the reference counts of ``objects`` changed over ``times`` runs of ``run``.

    Warmed up first (the UTF-8 of a str, the interpreter's specialised instructions), and
    counted with the type attribute cache empty: it holds references to the names it was last
    asked for (the interned "function" among them), whichever lookups came last."""
    getrefcount, collect, clear_type_cache = sys.getrefcount, gc.collect, sys._clear_type_cache
    for _ in range(300):
        run()
    collect()
    clear_type_cache()
    before = [getrefcount(obj) for obj in objects]
    for _ in range(times):
        run()
    collect()
    clear_type_cache()
    after = [getrefcount(obj) for obj in objects]  # counted exactly as before
    return [a - b for a, b in zip(after, before)]


def test_reference_counts_stay_put_over_many_calls():
    contexts = {"other": [object()]}
    bodies = {
        name: call_body(name, session="s") for name in
        ["const_str", "const_list", "const_big", "const_float", "const_dict", "raise_kept"]}
    bodies["lazy"] = call_body("lazy", ["x"])
    bodies["missing"] = call_body("not_there")
    map_body = pack({"module": P, "function": "const_str", "args": [], "kwargs": {},
                     "session": "s"})
    declined = [pack([P, "record", None, None, "other"]), call_body("NS.record"),
                call_body("const_str")[:-1], pack([P, "record", [msgpack.ExtType(1, b"")], None,
                                                   None])]
    module = sys.modules[P]
    objects = [
        fixture.CONST_STR, fixture.CONST_LIST, fixture.CONST_BIG, fixture.CONST_FLOAT,
        fixture.KEPT_ERROR, fixture.KeptError, module, module.__dict__, fixture.const_str,
        fixture.const_list, fixture.raise_kept, fixture.ident, fixture.__getattr__,
        calls.resolve, contexts, map_body, *bodies.values(), *declined,
        *[sys.intern(name) for name in ["module", "function", "args", "kwargs", "session",
                                        "modules"]],
        None, True, False, ValueError, AttributeError,
    ]

    def run():
        for name, raw in bodies.items():
            answer = _plainc.call(raw, 300, contexts, MAX_FRAME)
            if name == "raise_kept":
                answer[1].__traceback__ = None  # the same instance: its traceback would grow
        _plainc.call(map_body, 2 ** 40, contexts, MAX_FRAME)
        for raw in declined:
            _plainc.call(raw, 1, contexts, MAX_FRAME)
        fixture.GETATTR_CALLS.clear()

    changes = refcount_changes(objects, run)
    assert changes == [0] * len(objects), [
        (repr(obj)[:40], change) for obj, change in zip(objects, changes) if change]


def test_reference_counts_stay_put_through_ops_handle():
    ops = Ops(Registry(), Policy(), accelerator=C_PATH)
    raws = [call_body("const_str"), call_body("const_list"), call_body("raise_kept"),
            call_body("sqrt", [-1.0], module="math")]
    objects = [fixture.CONST_STR, fixture.CONST_LIST, fixture.KEPT_ERROR, ops.contexts]

    def run():
        for raw in raws:
            ops.handle(CALL, 9, raw)
        fixture.KEPT_ERROR.__traceback__ = None

    assert refcount_changes(objects, run, times=2_000) == [0] * len(objects)
    assert len(ops.registry) == 0


DEEP = 1
for _ in range(70):
    DEEP = [DEEP]

def test_an_answer_holds_the_only_references_to_what_the_call_made():
    """Counted outside ``assert``: pytest's rewriting keeps what an assertion evaluated."""
    getrefcount = sys.getrefcount
    frame = c_call(call_body("ident", ["a fresh string"]))
    counts = [getrefcount(frame)]  # 2: the name here, and the argument on the stack
    _, result, session = c_call(call_body("returns_object", session="a session"))
    counts += [getrefcount(result), getrefcount(session)]
    _, result, session = c_call(call_body("ident", [["an item", {"k": b"bytes value"}]]))
    counts += [getrefcount(result), getrefcount(result[0]), getrefcount(result[1]),
               getrefcount(result[1]["k"])]
    ok, exc, session = c_call(call_body("boom", ["x"], session="a session", module=H))
    counts += [getrefcount(exc), getrefcount(session)]
    ok, exc, session = c_call(call_body("sqrt", [-1.0], module="math"))
    counts += [getrefcount(exc)]
    (decoded,) = _plainc.decode(pack([["an item"], {"a key": "a value"}]))
    counts += [getrefcount(decoded), getrefcount(decoded[0]), getrefcount(decoded[0][0]),
               getrefcount(decoded[1]["a key"])]
    assert counts == [2] * len(counts)


MEMORY_SHAPES = {
    "scalar frame": call_body("ident", ["\u00e9t\u00e9 " * 10], {}, "a session"),
    "map form": pack({"module": P, "function": "plus", "args": [1.5], "kwargs": {"b": 2},
                      "session": "a session"}),
    "non-scalar": call_body("ident", [[1, {"k": b"v"}, "x" * 40]], None, "a session"),
    "view frame": memoryview(b"\x00" * 7 + call_body("ident", [b"v" * 5000]))[7:],
    "view declined": memoryview(call_body("NS.record", [b"v" * 5000])),
    "python failure": call_body("boom", ["m"], session="a session", module=H),
    "c failure": call_body("sqrt", [-1.0], module="math"),
    "getattr failure": call_body("lazy_fails"),
    "missing attribute": call_body("not_there"),
    "declined ext": pack([P, "ident", [msgpack.ExtType(3, b"xyz")], None, None]),
    "declined truncated": call_body("ident", [[1, 2, 3]])[:-1],
    "declined session": call_body("ident", [1], None, "busy"),
    "declined deep": call_body("ident", [DEEP]),
}


def run_calls(raw, times):
    contexts = {"busy": [object()]}
    call = _plainc.call
    getattr_calls = fixture.GETATTR_CALLS
    for _ in range(times):
        call(raw, 7, contexts, MAX_FRAME)
        getattr_calls.clear()  # the module __getattr__ keeps the names it was asked for
    gc.collect()


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("shape", sorted(MEMORY_SHAPES))
def test_traced_memory_stays_flat_over_many_calls(shape):
    """tracemalloc sees every object the calls allocate: one left behind per call would be
    hundreds of kilobytes here."""
    raw = MEMORY_SHAPES[shape]
    run_calls(raw, 1000)  # caches and free lists warmed up first
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        run_calls(raw, 10_000)
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert end - start < 32 * 1024, end - start


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
@pytest.mark.parametrize("shape", sorted(MEMORY_SHAPES))
def test_resident_memory_stays_flat_over_100_000_calls(shape):
    """Also what tracemalloc does not see (memory C code takes from malloc directly)."""
    raw = MEMORY_SHAPES[shape]
    run_calls(raw, 2000)
    start = resident_bytes()
    run_calls(raw, 100_000)
    assert resident_bytes() - start < 1 << 20


# -- serve() end to end ---------------------------------------------------------------------------


def request_frame(op, request_id, body):
    payload = encode_envelope(op, request_id, body)
    return len(payload).to_bytes(4, "big") + payload


SERVED = [
    call_body("sqrt", [2.0], module="math"),  # a scalar: the C accelerator's own frame
    call_body("ident", [b"v" * 70000]),  # a large one
    call_body("const_list", session="s"),  # not a scalar: Ops encodes it
    call_body("returns_object", session="s"),  # a ref
    call_body("boom", ["served"], module=H),  # a Python function raising
    call_body("sqrt", [-1.0], module="math"),  # a C function raising
    call_body("lazy_fails"),
    call_body("NS.record", ["served"]),  # declined: a Python path answers
    call_body("ident", [2 ** 64 - 1]),
]


def served_bytes(ops):
    """Everything a worker serving ``ops`` writes on its reply pipe for ``SERVED`` (and a
    ``PING``), until ``SHUTDOWN``."""
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    try:
        requests = [request_frame(CALL, 100 + i, raw) for i, raw in enumerate(SERVED)]
        requests.insert(2, request_frame(PING, 99, b"\xc0"))
        requests.append(request_frame(SHUTDOWN, 1000, b"\xc0"))
        writer = threading.Thread(target=os.write, args=(req_w, b"".join(requests)))
        writer.start()
        chunks = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(
            lambda: os.read(rep_r, 1 << 16), b"")))
        reader.start()
        channel = serve.Channel(req_r, 1 << 20, FrameWriter(rep_w, 1 << 20))
        assert serve.serve(channel, ops) == EXIT_OK
        writer.join(5)
        channel.closed = True
        channel.wake.set()  # a parked watch thread ends
        for thread in threading.enumerate():
            if thread.name == "pyvisor-io":
                thread.join(5)
        os.close(rep_w)
        rep_w = None
        reader.join(5)
        return b"".join(chunks)
    finally:
        for fd in (req_r, req_w, rep_r, rep_w):
            if fd is not None:
                os.close(fd)


def test_serve_writes_the_same_bytes_with_and_without_the_c_accelerator():
    counting = Counting(C_PATH)
    with_c = served_bytes(Ops(Registry(), Policy(), accelerator=counting))
    ran_with_c = list(fixture.RAN)
    fixture.GETATTR_CALLS.clear()
    python = served_bytes(Ops(Registry(), Policy(), accelerator=None))
    assert with_c == python
    assert fixture.RAN == ran_with_c * 2 == ["served"] * 2
    assert counting.kinds == {"declined": 1, "frame": 3, "result": 2, "failure": 3}
    assert len(with_c) > 70000 and with_c.count(b"Traceback") == 3
