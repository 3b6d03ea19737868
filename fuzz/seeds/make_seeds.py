"""Writes the seed corpus of the fuzz targets (fuzz/seeds/<target>/), from the worker's own codec.

Every seed is what a real worker sends (or, for ref_resolution, what a caller passes back): values
encoded by ``pyvisor_worker.value.encode`` with a real ref registry, frames built by
``pyvisor_worker.protocol``. Run from the repository root with the project's interpreter:

    .venv/bin/python fuzz/seeds/make_seeds.py

The output is deterministic (fixed values, ref ids from fresh registries); re-running it rewrites
the same files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402

from pyvisor_worker import protocol, value  # noqa: E402
from pyvisor_worker.refs import Registry  # noqa: E402

OUT = Path(__file__).resolve().parent


def registry(pool: str, slot: int, generation: int) -> Registry:
    return Registry(identity={"pool": pool, "slot": slot, "generation": generation})


def values() -> list[bytes]:
    """Reply bodies: one of each value form, a few nested ones, refs and stream refs."""
    reg = registry("p", 0, 0)
    plain = [
        None, True, False, 0, -1, 127, -33, 2**63 - 1, 2**63, 2**64 - 1, -(2**63),
        2**64, -(2**100), 1.5, -0.0, math.inf, -math.inf, math.nan, "", "héllo", b"", b"\x00\xff",
        [], [1, [2, [3, []]]], (), (1, "a", (2.5, None)), {1, 2, 3}, frozenset({"x", "y"}),
        {}, {"a": 1, "b": [True, None]}, {(1, 2): "tuple key", 3: "int key", None: 0.5},
        complex(1.5, -2.0), complex(math.nan, math.inf),
        dt.datetime(2026, 11, 25, 12, 30, 1, 123456),
        dt.datetime(2026, 11, 25, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.date(2026, 11, 25), dt.time(23, 59, 59, 1),
        np.arange(6, dtype="<f8").reshape(2, 3), np.array([1, -2, 3], dtype=">i4"),
        np.array([True, False]), np.zeros((0, 3), dtype="<u2"), np.array([1 + 2j], dtype="<c16"),
        np.array(7.0, dtype="<f4"),
    ]
    out = [value.encode(v) for v in plain]
    out.append(value.encode(re.compile(r"\d+"), reg, "s"))
    out.append(value.encode(iter([1, 2]), reg, "s"))
    out.append(value.encode({"model": object(), "items": (object(), [1, 2])}, reg, None))
    out.append(value.encode([[[[[[[[(1,)]]]]]]]]))
    return out


def frame(op: int, request_id: int, body: bytes) -> bytes:
    payload = protocol.encode_envelope(op, request_id, body)
    return struct.pack(">I", len(payload)) + payload


def frames() -> list[bytes]:
    """A limit selector byte (3: the default 64 MiB limit, 2: 4096 bytes), then a stream."""
    ready = value.encode({"protocol": 1, "pid": 4242, "python": "3.11.7",
                          "implementation": "cpython", "package": "0.1.0"})
    error = value.encode({"kind": "exception", "type": "ValueError", "module": "builtins",
                          "message": "math domain error", "traceback": "Traceback ..."})
    nil = value.encode(None)
    streams = [
        frame(protocol.READY, 0, ready),
        frame(protocol.READY, 0, ready) + frame(protocol.OK, 1, value.encode(1.4142135623730951))
        + frame(protocol.PONG, 2, nil) + frame(protocol.ERROR, 3, error),
        frame(protocol.OK, 2**40, value.encode({"page": (1, 2), "done": True})),
        frame(protocol.ERROR, 7, value.encode({"kind": "ref_not_found", "message": "ref 3"})),
        struct.pack(">I", protocol.DEFAULT_MAX_FRAME + 1),
    ]
    out = [b"\x03" + s for s in streams]
    out += [b"\x02" + frame(protocol.OK, 5, v) for v in values()[:12]]
    return out


def ref_requests() -> list[bytes]:
    """A selector byte, then ``[args, kwargs]`` carrying refs as a caller passes them back.

    Selector bits: 0 pool (p, q); 1-2 session (None, "s", "t", ""); 3-4 frame limit (64 MiB,
    64, 256, 4096 bytes); 5 RELEASE of the first ref instead of a CALL; 6 the rest are choices
    that build a value (then the bytes need not be MessagePack).
    """
    p0s = registry("p", 0, 0)
    p1s = registry("p", 1, 3)
    q0t = registry("q", 0, 0)
    pn = registry("p", 0, 0)

    def ref(reg: Registry, session: object) -> msgpack.ExtType:
        return msgpack.unpackb(value.encode(object(), reg, session), raw=False,
                               ext_hook=msgpack.ExtType)

    def body(args: object, kwargs: object) -> bytes:
        return msgpack.packb([args, kwargs], use_bin_type=True)

    a, b = ref(p0s, "s"), ref(p0s, "s")
    other_worker = ref(p1s, "s")
    other_pool = ref(q0t, "t")
    no_session = ref(pn, None)
    tup = msgpack.ExtType(value.TUPLE, msgpack.packb([a, 1, "x"]))
    cases = [
        (0b000010, body([a, b], {"k": a})),           # p, "s": both refs on p/0#0
        (0b000010, body([a, other_worker], None)),    # two workers
        (0b000100, body([a], None)),                  # session "t": mismatch
        (0b000011, body([a], None)),                  # pool q: wrong pool
        (0b000000, body([no_session], {})),           # no session, a sessionless ref
        (0b000010, body([tup], {"nested": [tup]})),   # refs inside a tuple
        (0b000101, body([other_pool], None)),         # q, "t"
        (0b100010, body([a], None)),                  # RELEASE a
        (0b100010, body([other_worker, a], None)),    # RELEASE, pinned to p/1#3
        (0b001010, body(["x" * 100, a], None)),       # over a 64-byte limit
        (0b000010, body([{a: other_worker}], None)),  # refs as map keys
    ]
    seeds = [bytes([pick]) + data for pick, data in cases]
    # Bit 6: the rest are choices that build a value around refs (fuzz_targets/ref_resolution.rs).
    for i, pick in enumerate([0b1000010, 0b1000101, 0b1100010, 0b1011010, 0b1000000]):
        seeds.append(bytes([pick]) + hashlib.sha256(b"choices %d" % i).digest() * 4)
    return seeds


def write(target: str, seeds: list[bytes]) -> None:
    folder = OUT / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    write("frame_decoder", frames())
    write("value_decoder", values())
    write("ref_resolution", ref_requests())
