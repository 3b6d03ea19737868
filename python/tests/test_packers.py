"""The encoder's reused msgpack packers (``value._pack``): reuse must never change a byte."""

import re
import threading

import msgpack
import pytest

from pyvisor_worker import value
from pyvisor_worker.refs import Registry
from pyvisor_worker.value import EncodeError, Encoder, encode


@pytest.fixture
def registry():
    return Registry(identity={"pool": "p", "slot": 0, "generation": 1})


@pytest.fixture
def idle():
    """This thread's idle packers, emptied before and after the test."""
    packers = value._PACKERS.idle
    packers.clear()
    yield packers
    packers.clear()


NESTED = [1, (2, (3, (4, "x")), frozenset({5})), {"k": (b"\x00" * 300,)}]
NESTED_BYTES = msgpack.packb([
    1,
    msgpack.ExtType(value.TUPLE, msgpack.packb([
        2,
        msgpack.ExtType(value.TUPLE, msgpack.packb([
            3, msgpack.ExtType(value.TUPLE, msgpack.packb([4, "x"]))])),
        msgpack.ExtType(value.FROZENSET, msgpack.packb([5])),
    ])),
    {"k": msgpack.ExtType(value.TUPLE, msgpack.packb([b"\x00" * 300]))},
])


def test_nested_packs_take_their_own_packer(idle):
    # A tuple inside a tuple packs again from the ``default`` hook while the outer pack is in
    # progress; on one shared packer the inner bytes would land in the outer buffer.
    assert encode(NESTED) == NESTED_BYTES
    assert encode(NESTED) == NESTED_BYTES


def test_a_packer_is_reused_across_encodes(idle):
    encode(1.5)
    assert len(idle) == 1
    packer = idle[0]
    assert encode(2.5) == msgpack.packb(2.5)
    assert idle == [packer]


def test_consecutive_replies_are_independent_bytes(idle):
    first = encode({"a": [1, 2, 3], "b": "x" * 1000})
    kept = bytes(first)
    second = encode({"a": [4, 5, 6], "b": "y" * 1000})
    assert type(first) is bytes and type(second) is bytes
    assert first == kept, "the second encode changed the first reply"
    assert value.decode(first) == {"a": [1, 2, 3], "b": "x" * 1000}
    assert value.decode(second) == {"a": [4, 5, 6], "b": "y" * 1000}


class Boom:
    """Packed through ``_leaf`` as a ref, or fails to encode without a registry."""


class Explodes(dict):
    """A dict subclass: ``default`` copies it, and the copy raises half way."""

    def __iter__(self):
        raise RuntimeError("boom")

    def keys(self):
        raise RuntimeError("boom")

    def items(self):
        raise RuntimeError("boom")


@pytest.mark.parametrize("bad", [
    [b"\x01" * 300_000, Boom()],                      # fails after a large prefix
    (b"\x02" * 1000, (3, (Boom(),))),                 # fails in a nested pack
    [(1, 2), Explodes(a=1)],                          # a hook raises a foreign exception
], ids=["large-prefix", "nested", "foreign-exception"])
def test_encoding_after_a_failed_encode_is_exact(idle, bad):
    with pytest.raises((EncodeError, RuntimeError)):
        Encoder().encode(bad)
    assert encode(NESTED) == NESTED_BYTES
    assert encode("ok") == b"\xa2ok"


def test_a_packer_whose_pack_failed_is_not_reused(idle):
    encode(0)
    assert len(idle) == 1
    with pytest.raises(EncodeError):
        Encoder().encode([Boom()])
    assert idle == [], "the failed packer went back to the idle list"


def test_graceful_fallback_after_a_fast_path_failure(idle, registry):
    loop = [1, (2,)]
    loop.append(loop)  # a cycle: the fast path fails, the slow path places a ref
    body = Encoder(registry, "s").encode(loop)
    back = value.decode(body)
    assert back[:2] == [1, (2,)] and isinstance(back[2], value.RefHandle)
    assert encode(NESTED) == NESTED_BYTES


def test_large_outputs_and_deep_nesting_do_not_pile_up_packers(idle, monkeypatch):
    monkeypatch.setattr(value, "_KEEP_BYTES", 1000)
    encode(b"x" * 2000)
    assert idle == [], "a packer with a grown buffer was kept"
    deep = 1
    for _ in range(40):
        deep = (deep,)
    encode(deep)
    assert 1 <= len(idle) <= value._KEEP_IDLE


def test_threads_do_not_share_packers(idle):
    encode(NESTED)
    main_packers = set(map(id, idle))
    results = {}
    seen = {}
    barrier = threading.Barrier(4)

    def run(n):
        barrier.wait()
        obj = [n, (n, (n, "t" * n)), {"n": (b"\x07" * (n * 1000),)}]
        results[n] = all(value.decode(encode(obj)) == obj for _ in range(300))
        seen[n] = set(map(id, value._PACKERS.idle))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {1: True, 2: True, 3: True, 4: True}
    for n in seen:
        assert seen[n] and not seen[n] & main_packers


def test_refs_through_shared_packers_keep_identity(idle, registry):
    pattern = re.compile("same")
    back = value.decode(Encoder(registry, "s").encode([pattern, (pattern,), {"p": pattern}]))
    assert back[0] == back[1][0] == back[2]["p"]
    assert len(registry) == 1


@pytest.mark.parametrize("size", [0, 1, 15, 16, 255, 256, 0xFFFF, 0x10000])
def test_container_headers_match_msgpack(size):
    packer = msgpack.Packer()
    assert value.array_header(size) == packer.pack_array_header(size)
    assert value.map_header(size) == packer.pack_map_header(size)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 8, 16, 17, 255, 256, 0xFFFF, 0x10000])
def test_ext_headers_match_msgpack(size):
    data = b"\x05" * size
    expected = msgpack.Packer().pack_ext_type(value.NDARRAY, data)
    assert value.ext_header(value.NDARRAY, size) + data == expected
