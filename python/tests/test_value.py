import asyncio
import collections
import datetime as dt
import math
import re
import struct
import sys

import msgpack
import numpy as np
import pytest

from pyvisor_worker import value
from pyvisor_worker.refs import Registry
from pyvisor_worker.value import DecodeError, EncodeError, Encoder, RefHandle, decode, encode


@pytest.fixture
def registry():
    return Registry(identity={"pool": "p", "slot": 3, "generation": 7})


def round_trip(obj, registry=None, session=None):
    return decode(encode(obj, registry, session))


def refs_in(obj):
    """Every RefHandle inside a decoded value, in order."""
    found = []

    def walk(x):
        if isinstance(x, RefHandle):
            found.append(x)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, (list, tuple, set, frozenset)):
            for item in x:
                walk(item)

    walk(obj)
    return found


def ext(code, data):
    return msgpack.packb(msgpack.ExtType(code, data))


# -- native values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [
    None, True, False, 0, -1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1, 1.5, -0.0, math.inf, -math.inf,
    "", "héllo ✓", b"", b"\x00\xff", [], [1, "a", None, [b"x"]], {}, {"a": {"b": [1, 2]}},
])
def test_native_values_round_trip(obj):
    back = round_trip(obj)
    assert back == obj and type(back) is type(obj)


def test_native_values_are_plain_msgpack():
    obj = {"a": [1, 2.5, "x", b"y", None, True], 3: {"n": -4}}
    assert encode(obj) == msgpack.packb(obj, use_bin_type=True)
    assert encode("a") == b"\xa1a"
    assert encode(b"a") == b"\xc4\x01a"
    assert encode(bytearray(b"a")) == b"\xc4\x01a"
    assert encode(memoryview(b"abcd")[::2]) == b"\xc4\x02ac"


@pytest.mark.parametrize("bits", [
    0x7FF8000000000000, 0x7FF8000000000001, 0xFFF8000000000000, 0x7FF0000000000000,
    0xFFF0000000000000, 0x8000000000000000, 0x0000000000000001,
])
def test_floats_are_bit_exact(bits):
    number = struct.unpack(">d", struct.pack(">Q", bits))[0]
    back = round_trip([number])[0]
    assert struct.pack(">d", back) == struct.pack(">Q", bits)


@pytest.mark.parametrize("number", [
    2 ** 64, -(2 ** 63) - 1, 2 ** 200, -(2 ** 200), 123456789012345678901234567890,
    -123456789012345678901234567890,
])
def test_bigints_are_decimal_text(number):
    data = encode(number)
    assert data == ext(value.BIGINT, str(number).encode("ascii"))
    assert round_trip(number) == number


def test_the_64_bit_ranges_stay_ints():
    assert encode(2 ** 64 - 1) == msgpack.packb(2 ** 64 - 1)
    assert encode(-(2 ** 63)) == msgpack.packb(-(2 ** 63))


def test_int_float_and_str_subclasses_are_values():
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    class Name(str, enum.Enum):
        A = "a"

    assert round_trip([Colour.RED, Name.A, True]) == [1, "a", True]
    assert type(round_trip(Colour.RED)) is int


def test_tuples_sets_and_frozensets_keep_their_type():
    obj = (1, (2, 3), [4, (5,)], {6, 7}, frozenset({8}), ())
    back = round_trip(obj)
    assert back == obj
    assert type(back) is tuple and type(back[1]) is tuple and type(back[2][1]) is tuple
    assert type(back[3]) is set and type(back[4]) is frozenset
    assert encode((1, 2)) == ext(value.TUPLE, msgpack.packb([1, 2]))


def test_namedtuples_are_tuples():
    Point = collections.namedtuple("Point", "x y")
    back = round_trip(Point(1, 2))
    assert back == (1, 2) and type(back) is tuple


def test_maps_keep_any_keys_and_their_order():
    obj = {2: "b", 1: "a", None: 0, b"k": 1, 1.5: 2, "s": 3, (1, "x"): 4, frozenset({1}): 5}
    back = round_trip(obj)
    assert back == obj
    assert list(back) == list(obj)


def test_int_and_tuple_keyed_dicts():
    obj = {1: "one", -2: "minus two", (1, 2): "pair", ((1, 2), 3): "nested"}
    assert round_trip(obj) == obj


def test_arrays_used_as_keys_or_set_elements_decode_as_tuples():
    # What serde makes of a Rust tuple key: a plain array.
    data = msgpack.packb([{(1, 2): "pair", "x": 1}])
    assert decode(data) == [{(1, 2): "pair", "x": 1}]
    map_key = b"\x81\x81\xa1k\x01\xa1v"  # {{"k": 1}: "v"}
    assert decode(map_key) == {(("k", 1),): "v"}
    assert decode(ext(value.SET, msgpack.packb([[1, 2], [1, 2], 3]))) == {(1, 2), 3}
    assert decode(ext(value.FROZENSET, msgpack.packb([[1, [2]]]))) == frozenset({(1, (2,))})


def test_a_dict_whose_keys_look_like_tags_is_plain_data():
    obj = {"__type__": "tuple", "items": [1, 2], "__ref__": 5, "$set": [1]}
    assert encode(obj) == msgpack.packb(obj)
    assert round_trip(obj) == obj


def test_dict_subclasses_are_data():
    from dspy.dsp.utils import dotdict

    ordered = collections.OrderedDict([("b", 1), ("a", 2)])
    ordered.move_to_end("b")
    back = round_trip({"d": dotdict(x=1, y=[2]), "o": ordered,
                       "c": collections.Counter("aab"),
                       "dd": collections.defaultdict(list, {"k": [1]})})
    assert back == {"d": {"x": 1, "y": [2]}, "o": {"a": 2, "b": 1}, "c": {"a": 2, "b": 1},
                    "dd": {"k": [1]}}
    assert list(back["o"]) == ["a", "b"]
    assert type(back["d"]) is dict


def test_list_subclasses_are_data():
    class MyList(list):
        pass

    assert round_trip(MyList([1, MyList([2])])) == [1, [2]]


@pytest.mark.parametrize("number", [1 + 2j, -0.5j, complex(math.inf, -math.inf)])
def test_complex(number):
    back = round_trip(number)
    assert back == number and type(back) is complex
    assert encode(number) == ext(value.COMPLEX, msgpack.packb([number.real, number.imag]))


def test_complex_nan_parts_are_bit_exact():
    back = round_trip(complex(math.nan, 1.0))
    assert math.isnan(back.real) and back.imag == 1.0


@pytest.mark.parametrize("obj", [
    dt.datetime(2024, 2, 29, 13, 14, 15, 123456),
    dt.datetime(2024, 2, 29, 13, 14, 15, 1, tzinfo=dt.timezone.utc),
    dt.datetime(1999, 12, 31, 23, 59, 59, 999999,
                tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.date(2024, 1, 2),
    dt.time(1, 2, 3, 456789),
    dt.time(23, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
])
def test_datetimes_dates_and_times(obj):
    back = round_trip(obj)
    assert back == obj and type(back) is type(obj)
    assert getattr(back, "tzinfo", None) == getattr(obj, "tzinfo", None)
    code = {dt.datetime: value.DATETIME, dt.date: value.DATE, dt.time: value.TIME}[type(obj)]
    assert encode(obj) == ext(code, obj.isoformat().encode())


def test_a_datetime_is_not_a_date():
    assert msgpack.unpackb(encode(dt.datetime(2024, 1, 2, 3))).code == value.DATETIME


# -- numpy -----------------------------------------------------------------------------------------


def test_a_10mb_float64_array_is_bit_exact_and_decodes_without_copying():
    rng = np.random.default_rng(1)
    arr = rng.standard_normal(10 * 1024 * 1024 // 8).reshape(1024, -1)
    arr[0, 0], arr[0, 1], arr[0, 2] = np.nan, np.inf, -0.0
    data = encode(arr)
    back = decode(data)
    assert back.dtype == np.dtype("<f8") and back.shape == arr.shape
    assert back.tobytes() == arr.tobytes()
    assert not back.flags.writeable  # a view on the message buffer
    base = back
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, (bytes, memoryview))  # no copy into numpy-owned memory
    with pytest.raises(ValueError):
        back[0, 0] = 1.0
    writable = back.copy()
    writable[0, 0] = 1.0


def test_ndarray_wire_form():
    arr = np.arange(6, dtype="<i4").reshape(2, 3)
    payload = msgpack.unpackb(msgpack.unpackb(encode(arr)).data)
    assert payload == ["<i4", [2, 3], arr.tobytes()]


@pytest.mark.parametrize("arr", [
    np.array([True, False]),
    np.arange(10, dtype=np.int8),
    np.arange(10, dtype=np.uint64) * (2 ** 60),
    np.arange(10, dtype=">f4"),
    np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
    np.array([[1 + 2j]], dtype=np.complex128),
    np.array(3.5),
    np.zeros((0, 3)),
    np.arange(24.0).reshape(2, 3, 4)[:, ::2, 1:],  # not contiguous
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
])
def test_ndarrays_round_trip(arr):
    back = round_trip(arr)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert np.array_equal(back, arr)


def test_ndarrays_of_other_dtypes_are_refs(registry):
    strings = np.array(["a", "b"])
    objects = np.array([object()], dtype=object)
    back = round_trip([strings, objects], registry)
    assert [r.payload["type"] for r in refs_in(back)] == ["ndarray", "ndarray"]


def test_numpy_scalars_are_python_scalars():
    obj = [np.int64(-3), np.uint64(2 ** 64 - 1), np.float32(1.5), np.float64(2.5), np.bool_(True),
           np.complex64(1 + 1j), np.str_("s")]
    back = round_trip(obj)
    assert back == [-3, 2 ** 64 - 1, 1.5, 2.5, True, 1 + 1j, "s"]
    assert [type(x) for x in back] == [int, int, float, float, bool, complex, str]
    assert encode(np.int64(7)) == msgpack.packb(7)


def test_bad_ndarray_payloads_are_decode_errors():
    good = msgpack.packb(["<f8", [2], b"\x00" * 16])
    assert decode(ext(value.NDARRAY, good)).shape == (2,)
    for payload in (
        msgpack.packb(["<f8", [3], b"\x00" * 16]),  # size mismatch
        msgpack.packb(["|O", [1], b"\x00" * 8]),  # object dtype
        msgpack.packb(["<f8", [2], "not bin"]),
        msgpack.packb(["<f8", [-2], b"\x00" * 16]),
        msgpack.packb([1, [2], b"\x00" * 16]),
        msgpack.packb({"dtype": "<f8"}),
        msgpack.packb(["<f8", [2], b"\x00" * 16]) + b"x",
    ):
        with pytest.raises(DecodeError):
            decode(ext(value.NDARRAY, payload))


def test_numpy_is_not_imported_for_plain_values():
    import subprocess

    code = ("import sys; from pyvisor_worker import value, refs; r = refs.Registry();"
            "import re; value.decode(value.encode([1, (2,), {3}, re.compile('x')], r));"
            "print('numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# -- decoding errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    ext(42, b"x"),
    ext(value.TUPLE, b"\xc1"),
    ext(value.TUPLE, msgpack.packb({"a": 1})),
    ext(value.BIGINT, b"12a"),
    ext(value.BIGINT, b""),
    ext(value.COMPLEX, msgpack.packb([1.0])),
    ext(value.DATETIME, b"yesterday"),
    ext(value.DATE, b"\xff"),
    ext(value.REF, msgpack.packb([1, 2])),
])
def test_bad_ext_payloads_are_decode_errors(data):
    with pytest.raises(DecodeError):
        decode(data)


def test_garbage_does_not_decode():
    for data in (b"\xc1", b"", b"\x92\x01", b"\x01\x02"):
        with pytest.raises(Exception):
            decode(data)


# -- refs in values ---------------------------------------------------------------------------------


def test_refs_decode_through_the_resolver():
    payload = {"id": 5, "session": "s", "pool": "p", "slot": 0, "generation": 1, "type": "X",
               "module": "m"}
    data = msgpack.packb([msgpack.ExtType(value.REF, msgpack.packb(payload)),
                          (msgpack.ExtType(value.STREAM_REF, msgpack.packb(payload)),)])
    seen = []
    sentinel = object()

    def resolve(p):
        seen.append(p)
        return sentinel

    assert decode(data, resolve) == [sentinel, [sentinel]]
    assert seen == [payload, payload]
    handles = decode(data)
    assert handles[0] == RefHandle(payload, False) and handles[1][0].stream


def test_resolver_errors_propagate():
    class Boom(Exception):
        pass

    def resolve(p):
        raise Boom(p["id"])

    data = msgpack.packb({"k": (msgpack.ExtType(value.REF, msgpack.packb({"id": 9})),)})
    with pytest.raises(Boom):
        decode(data, resolve)


# -- graceful serialization -------------------------------------------------------------------------


REF_KEYS = {"id", "session", "pool", "slot", "generation", "type", "module"}


def test_ref_metadata(registry):
    pattern = re.compile("ab+")
    (ref,) = refs_in(round_trip([pattern], registry, "s1"))
    assert set(ref.payload) == REF_KEYS
    assert ref.payload["session"] == "s1"
    assert (ref.payload["pool"], ref.payload["slot"], ref.payload["generation"]) == ("p", 3, 7)
    assert (ref.payload["type"], ref.payload["module"]) == ("Pattern", "re")
    assert not ref.stream
    assert registry.resolve(ref.payload, "s1") is pattern


def test_only_the_pattern_in_a_list_of_dicts_is_a_ref(registry):
    pattern = re.compile("p1")
    back = round_trip([{"name": "a", "re": pattern, "n": [1, 2]}, {"name": "b"}], registry)
    assert back[0]["name"] == "a" and back[0]["n"] == [1, 2] and back[1] == {"name": "b"}
    assert isinstance(back[0]["re"], RefHandle)
    assert len(registry) == 1


def test_a_pattern_between_values(registry):
    back = round_trip([1, re.compile("p2"), 3], registry)
    assert back[0] == 1 and back[2] == 3 and back[1].payload["type"] == "Pattern"


def test_a_pattern_three_levels_down(registry):
    back = round_trip({"a": {"b": {"c": re.compile("p3"), "d": 4}}}, registry)
    assert back["a"]["b"]["d"] == 4
    assert isinstance(back["a"]["b"]["c"], RefHandle)


def test_distinct_objects_get_distinct_ids(registry):
    patterns = [re.compile("x1"), re.compile("x2"), re.compile("x3")]
    ids = [r.id for r in refs_in(round_trip(patterns, registry))]
    assert len(set(ids)) == 3
    for ref_id, pattern in zip(ids, patterns):
        assert registry.resolve({"id": ref_id}, None) is pattern


def test_a_tuple_with_a_ref_in_the_middle(registry):
    back = round_trip((1, re.compile("t"), "z"), registry)
    assert type(back) is tuple and back[0] == 1 and back[2] == "z"
    assert isinstance(back[1], RefHandle)


def test_a_generator_in_a_dict_is_a_stream_ref(registry):
    def numbers():
        yield 1

    back = round_trip({"stream": numbers(), "status": "ok"}, registry)
    assert back["status"] == "ok"
    assert back["stream"].stream and back["stream"].payload["type"] == "generator"
    assert msgpack.unpackb(encode(iter([1]), registry)).code == value.STREAM_REF


def test_files_and_context_managers_are_plain_refs(registry, tmp_path):
    with open(tmp_path / "f", "w") as f:
        back = round_trip([f, iter([])], registry)
    assert [r.stream for r in back] == [False, True]


def test_an_async_generator_is_a_plain_ref(registry):
    async def agen():
        yield 1

    gen = agen()
    back = round_trip(gen, registry)
    assert isinstance(back, RefHandle) and not back.stream
    assert back.payload["type"] == "async_generator"
    asyncio.run(gen.aclose())


def test_the_same_object_twice_is_one_id(registry):
    pattern = re.compile("same")
    back = round_trip({"a": pattern, "b": [pattern, (pattern,)], pattern: 1}, registry)
    ids = {r.id for r in refs_in(back)}
    assert len(ids) == 1 and len(registry) == 1


def test_separate_results_get_separate_ids(registry):
    pattern = re.compile("again")
    first = round_trip(pattern, registry)
    second = round_trip(pattern, registry)
    assert first.id != second.id


def test_a_self_referencing_list(registry):
    loop = [1]
    loop.append(loop)
    back = round_trip(loop, registry)
    assert back[0] == 1
    assert registry.resolve(back[1].payload, None) is loop
    assert len(registry) == 1


def test_two_dicts_pointing_at_each_other(registry):
    a, b = {"name": "a"}, {"name": "b"}
    a["other"], b["other"] = b, a
    back = round_trip(a, registry)
    assert back["name"] == "a" and back["other"]["name"] == "b"
    assert registry.resolve(back["other"]["other"].payload, None) is a


def test_a_10_deep_chain_back_to_the_root(registry):
    root = {"depth": 0}
    node = root
    for depth in range(1, 11):
        node["next"] = {"depth": depth}
        node = node["next"]
    node["next"] = root
    back = round_trip(root, registry)
    for depth in range(11):
        assert back["depth"] == depth
        back = back["next"]
    assert registry.resolve(back.payload, None) is root


def test_a_cycle_through_a_tuple_and_a_shared_non_cyclic_list(registry):
    shared = [1, 2]
    holder = []
    cycle = (holder, shared, shared)
    holder.append(cycle)
    back = round_trip(cycle, registry)
    assert back[1] == back[2] == [1, 2]  # shared but not a back-edge: data twice
    assert registry.resolve(back[0][0].payload, None) is cycle


def test_nesting_deeper_than_the_recursion_limit_is_one_ref(registry):
    root = [re.compile("early"), {"k": re.compile("also early")}]
    node = root
    for _ in range(sys.getrecursionlimit() + 100):
        child = []
        node.append(child)
        node = child
    before = len(registry)
    back = round_trip(root, registry)
    assert isinstance(back, RefHandle) and back.payload["type"] == "list"
    assert len(registry) == before + 1
    assert registry.resolve(back.payload, None) is root


def test_a_failure_anywhere_makes_the_whole_value_one_ref(registry):
    class Odd(list):
        def __iter__(self):
            raise RuntimeError("no iterating me")

    obj = {"p": re.compile("leaked?"), "odd": Odd([1])}
    back = round_trip(obj, registry)
    assert isinstance(back, RefHandle) and back.payload["type"] == "dict"
    assert len(registry) == 1
    assert registry.resolve(back.payload, None) is obj


def test_a_string_that_is_not_utf8_makes_the_value_a_ref(registry):
    back = round_trip(["ok", "\udc80"], registry)
    assert isinstance(back, RefHandle) and back.payload["type"] == "list"


def test_an_lm_history_entry_keeps_everything_but_the_response(registry):
    class ModelResponse:
        pass

    response = ModelResponse()
    entry = {
        "prompt": None,
        "messages": [{"role": "user", "content": "hi"}],
        "kwargs": {"temperature": 0.0, "max_tokens": 100},
        "response": response,
        "outputs": ["hello"],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        "cost": 0.00012,
        "timestamp": dt.datetime(2025, 1, 1, 12, 0).isoformat(),
        "uuid": "0f6e",
        "model": "openai/gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "model_type": "chat",
    }
    back = round_trip([entry], registry)[0]
    assert isinstance(back["response"], RefHandle)
    assert back["response"].payload["type"].endswith("ModelResponse")
    assert {k: v for k, v in back.items() if k != "response"} == {
        k: v for k, v in entry.items() if k != "response"}
    assert len(registry) == 1


def test_without_a_registry_objects_are_encode_errors():
    with pytest.raises(EncodeError) as info:
        encode([1, {"a": re.compile("x")}])
    assert (info.value.type_name, info.value.type_module) == ("Pattern", "re")
    loop = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        encode(loop)
    with pytest.raises(EncodeError):
        encode("\udc80")


def test_encoder_rollback_drops_its_refs(registry):
    encoder = Encoder(registry, "s")
    encoder.encode([re.compile("r1"), re.compile("r2")])
    assert len(registry) == 2 and len(encoder.created) == 2
    encoder.rollback()
    assert len(registry) == 0


def test_the_fast_path_and_the_slow_path_agree(registry):
    pattern = re.compile("agree")
    obj = {"a": [1, (2, {3}), pattern], "b": collections.OrderedDict(x=pattern), 5: 2 ** 70,
           "c": [dt.date(2020, 1, 1), 1j, np.float32(2.0), bytearray(b"x")]}
    encoder = Encoder(registry, None)
    fast = encoder.encode(obj)
    out = []
    encoder._walk(obj, out)  # the same encoder: the memo gives the same ref id
    assert b"".join(out) == fast
    assert len(registry) == 1


def test_the_codec_lives_here():
    assert "ext types" in value.__doc__
