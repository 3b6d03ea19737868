import math

import msgpack
import pytest

from pyvisor_worker import value
from pyvisor_worker.value import EncodeError, decode, encode


@pytest.mark.parametrize("obj", [
    None, True, False, 0, -1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1, 1.5, -0.0, math.inf,
    "", "héllo ✓", b"", b"\x00\xff", [], [1, "a", None, [b"x"]], {}, {"a": {"b": [1, 2]}},
])
def test_native_values_round_trip(obj):
    assert decode(encode(obj)) == obj


def test_nan_round_trips():
    assert math.isnan(decode(encode(math.nan)))


def test_str_is_str_and_bytes_is_bin():
    assert encode("a") == b"\xa1a"
    assert encode(b"a") == b"\xc4\x01a"
    assert encode(bytearray(b"a")) == b"\xc4\x01a"
    assert decode(b"\xc4\x01a") == b"a"
    assert decode(b"\xa1a") == "a"


def test_tuples_encode_as_arrays_and_decode_as_lists():
    assert decode(encode((1, (2, 3)))) == [1, [2, 3]]


def test_maps_keep_any_keys_and_their_order():
    obj = {2: "b", 1: "a", None: 0, b"k": 1, 1.5: 2, "s": 3}
    back = decode(encode(obj))
    assert back == obj
    assert list(back) == list(obj)


def test_array_and_map_keys_decode_as_tuples():
    data = msgpack.packb([{(1, 2): "pair", "x": 1}])  # the tuple key packs as an array
    assert decode(data) == [{(1, 2): "pair", "x": 1}]
    map_key = b"\x81\x81\xa1k\x01\xa1v"  # {{"k": 1}: "v"}
    assert decode(map_key) == {(("k", 1),): "v"}


@pytest.mark.parametrize("obj, type_name", [
    ({1, 2}, "set"),
    (object(), "object"),
    ([1, {"a": frozenset()}], "frozenset"),
    (2 ** 64, "int"),
    (-(2 ** 63) - 1, "int"),
    ("\udc80", "str"),
])
def test_unencodable_values_name_the_offending_type(obj, type_name):
    with pytest.raises(EncodeError) as info:
        encode(obj)
    assert info.value.type_name == type_name
    assert type_name in str(info.value)


def test_a_nested_class_is_named_by_its_qualname():
    class Local:
        pass

    with pytest.raises(EncodeError) as info:
        encode({"x": Local()})
    assert info.value.type_name.endswith("<locals>.Local")
    assert info.value.type_module == __name__


def test_a_self_referencing_list_is_an_encode_error():
    loop = []
    loop.append(loop)
    with pytest.raises(EncodeError) as info:
        encode(loop)
    assert info.value.type_name == "list"


def test_garbage_does_not_decode():
    for data in (b"\xc1", b"", b"\x92\x01", b"\x01\x02"):
        with pytest.raises(Exception):
            decode(data)


def test_the_codec_lives_here():
    assert "ext types" in value.__doc__
