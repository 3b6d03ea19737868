"""The plain path: which ``CALL`` bodies it takes, and that it answers exactly as the general
path does."""

import doctest
import math

import msgpack
import pytest

import pyvisor_test_helpers as helpers
from pyvisor_worker import calls
from pyvisor_worker import ops as ops_module
from pyvisor_worker import plain as plain_module
from pyvisor_worker import value
from pyvisor_worker.ops import Ops
from pyvisor_worker.plain import plain_call
from pyvisor_worker.policy import Policy
from pyvisor_worker import protocol
from pyvisor_worker.protocol import CALL, CONTEXT
from pyvisor_worker.refs import Registry

H = "pyvisor_test_helpers"


def body(**fields):
    fields.setdefault("module", "math")
    fields.setdefault("function", "sqrt")
    return msgpack.packb(fields, use_bin_type=True)


def test_a_plain_body_gives_its_fields():
    raw = body(args=[2.0], kwargs={"k": 1}, session="s1")
    assert plain_call(raw, {}) == ("math", "sqrt", [2.0], {"k": 1}, "s1")
    assert plain_call(memoryview(raw), {}) == ("math", "sqrt", [2.0], {"k": 1}, "s1")


def test_the_positional_body_the_host_sends_gives_its_fields():
    raw = msgpack.packb(["math", "sqrt", [2.0], {"k": 1}, "s1"])
    assert plain_call(raw, {}) == ("math", "sqrt", [2.0], {"k": 1}, "s1")
    assert plain_call(msgpack.packb(["math", "sqrt", None, None, None]), {}) == (
        "math", "sqrt", (), {}, None)


def test_nil_and_absent_args_and_kwargs_are_empty():
    assert plain_call(body(args=None, kwargs=None), {})[2:] == ((), {}, None)
    assert plain_call(body(), {})[2:] == ((), {}, None)


@pytest.mark.parametrize("raw", [
    msgpack.packb([1, 2]),  # not a map
    msgpack.packb({"function": "sqrt"}),  # no module
    body(module=""),
    body(function=7),
    body(args={"a": 1}),
    body(args=[msgpack.ExtType(value.TUPLE, msgpack.packb([1]))]),  # an ext value
    body(args=[msgpack.ExtType(value.REF, msgpack.packb({"id": 1}))]),  # a ref
    body(kwargs=[1]),
    body(kwargs={b"k": 1}),  # a bytes key passes the decoder, not the plain path
    body(args=[{1: "int key"}]),  # a non-string map key
    body(session=5),
    msgpack.packb(["math", "sqrt", [2.0], None]),  # a positional body of the wrong length
    msgpack.packb(["math", "sqrt", [2.0], None, None, None]),
    msgpack.packb(["math", "", [2.0], None, None]),
    msgpack.packb([b"math", "sqrt", [2.0], None, None]),
    b"\xc1",  # never used in MessagePack
    body()[:-2],  # truncated
    body() + b"\x00",  # extra data
])
def test_anything_unusual_goes_to_the_general_path(raw):
    assert plain_call(raw, {}) is None


def test_a_session_with_contexts_goes_to_the_general_path():
    raw = body(session="s1")
    assert plain_call(raw, {"s1": [object()]}) is None
    assert plain_call(raw, {"other": [object()]}) is not None


BODIES = [
    {"module": "math", "function": "sqrt", "args": [2.0]},
    {"module": "math", "function": "sqrt", "args": [-1.0]},  # ValueError
    {"module": "math", "function": "nope"},
    {"module": "no_such_module_here", "function": "f"},
    {"module": "builtins", "function": "eval", "args": ["1"]},  # not allowed
    {"module": "os", "function": "getpid", "args": [1]},  # TypeError from a builtin
    {"module": H, "function": "echo", "args": [[1, "a", None, True, b"b", {"k": 1.5}]]},
    {"module": H, "function": "echo", "args": [2 ** 64 - 1]},
    {"module": H, "function": "echo", "args": ["\u00e9t\u00e9"]},
    {"module": H, "function": "echo", "kwargs": None, "args": None, "session": "s"},
    {"module": H, "function": "boom", "args": ["message"]},
    {"module": "builtins", "function": "pow", "args": [2, 100]},  # a big int: BIGINT ext
    {"module": "builtins", "function": "complex", "args": [1.0, 2.0]},
    {"module": "builtins", "function": "tuple", "args": [[1, 2]]},
    {"module": "builtins", "function": "chr", "args": [0xD800]},  # a lone surrogate
    {"module": "builtins", "function": "object"},  # a ref
    {"module": "builtins", "function": "dict", "kwargs": {"a": [1.5, float("nan")]}},
    {"module": "math", "function": "sqrt", "args": [2.0], "session": 3},  # bad session
]


BODIES += [
    {"module": H, "function": "echo", "args": [msgpack.Timestamp(1, 2)]},  # ext -1, msgpack's own
    {"module": H, "function": "echo", "args": [{b"k": {b"n": [1, {"x": b"y"}]}}]},
    {"module": H, "function": "echo", "args": [b"z" * 6000]},  # a body split off as a view
    {"module": H, "function": "echo", "kwargs": {"a": 1}, "session": "s"},
]

POLICIES = {
    "allowlist": lambda: Policy(allow_modules=["math", "os", "builtins", H]),
    "open": Policy,  # no allowlist: Policy.check's fast return
}


def positional(b):
    """The body as the host sends it, ``[module, function, args, kwargs, session]``."""
    return [b.get(field) for field in calls.CALL_FIELDS]


def run_all(bodies, policy):
    ops = Ops(Registry(), POLICIES[policy]())
    replies = []
    for i, b in enumerate(bodies):
        raw = msgpack.packb(b)
        payload = protocol.encode_envelope(CALL, 1000 + i, raw)
        # The body as the channel gives it: bytes, or a view on a large payload.
        replies.append(ops.handle(CALL, 1000 + i, protocol.split_envelope(payload)[2]))
    return replies


ODD_POSITIONAL = [
    [], ["math", "sqrt", [2.0], None], ["math", "sqrt", [2.0], None, None, None],
    [None, "sqrt", [2.0], None, None], ["math", "sqrt", [2.0], None, 5],
    ["math", "sqrt", {"a": 1}, None, None], ["math", "sqrt", [2.0], {b"k": 1}, None],
    [H, "echo", [msgpack.ExtType(value.TUPLE, msgpack.packb([1]))], None, "s"],
]


def test_odd_positional_bodies_get_the_general_paths_answer(monkeypatch):
    """Wrong lengths, a nil module, a bad session, bytes keys, ext values: the plain path
    declines them, and the reply is the general path's."""
    ops = Ops(Registry(), Policy())
    raws = [msgpack.packb(b, use_bin_type=True) for b in ODD_POSITIONAL]
    assert [plain_call(raw, {}) for raw in raws] == [None] * len(raws)
    fast = [ops.handle(CALL, 7, raw) for raw in raws]
    monkeypatch.setattr(ops_module, "plain_call", lambda raw, contexts: None)
    general = [Ops(Registry(), Policy()).handle(CALL, 7, raw) for raw in raws]
    assert fast == general
    assert [ok for ok, _ in general].count(False) >= 6


@pytest.mark.parametrize("form", ["positional", "map"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_the_plain_path_answers_as_the_general_path(monkeypatch, policy, form):
    bodies = [positional(b) for b in BODIES] if form == "positional" else BODIES
    fast = run_all(bodies, policy)
    monkeypatch.setattr(ops_module, "plain_call", lambda raw, contexts: None)
    general = run_all(bodies, policy)
    for b, got, want in zip(bodies, fast, general):
        if got[0] and want[0]:
            assert got[1] == want[1], b
        else:
            assert got == want, b
    assert [ok for ok, _ in fast].count(True) >= 8  # both kinds of reply were compared


@pytest.mark.parametrize("plain", [True, False])
def test_keyboard_interrupt_escapes_both_paths(monkeypatch, plain):
    if not plain:
        monkeypatch.setattr(ops_module, "plain_call", lambda raw, contexts: None)
    with pytest.raises(KeyboardInterrupt):
        Ops(Registry(), Policy()).handle(CALL, 1, body(module=H, function="interrupt"))


def test_a_scalar_the_packer_refuses_goes_to_the_encoder(monkeypatch):
    """msgpack refuses str and bytes of 4 GiB and more with ``ValueError``: the encoder then
    decides (a ref), nothing escapes."""

    def refuse(obj, encoder=None):
        if encoder is None:
            raise ValueError("bytes object is too large")
        return real_pack(obj, encoder)

    real_pack = value._pack
    monkeypatch.setattr(value, "_pack", refuse)
    assert value.encode_scalar(b"big") is None


def test_a_plain_call_is_never_decoded_by_the_general_path(monkeypatch):
    ops = Ops(Registry(), Policy())

    def no_general_decode(*args):
        raise AssertionError("the general path decoded a plain call")

    monkeypatch.setattr(ops, "_decode", no_general_decode)
    ok, reply = ops.handle(CALL, 7, body(args=[2.0], session="s1"))
    assert ok and value.decode(reply) == math.sqrt(2.0)


def test_contexts_still_apply_to_plain_bodies():
    ops = Ops(Registry(), Policy())
    ok, _ = ops.handle(CONTEXT, 1, msgpack.packb({
        "module": H, "function": "setting", "args": ["ctx"], "session": "s1"}))
    assert ok
    ok, reply = ops.handle(CALL, 2, body(module=H, function="get_setting", session="s1"))
    assert ok and value.decode(reply) == "ctx"
    ok, reply = ops.handle(CALL, 3, body(module=H, function="get_setting", session="s2"))
    assert ok and value.decode(reply) == "default"


class Float(float):
    """A float subclass: not an exact scalar, so the encoder decides."""


@pytest.mark.parametrize("obj", [
    0.0, -0.0, 1.5, float("inf"), float("nan"), 1e308, 0, -1, 2 ** 63 - 1, -(2 ** 63),
    2 ** 64 - 1, True, False, None, "", "ascii", "\u00e9t\u00e9 \U0001F600", b"", b"\x00\xff",
])
def test_encode_scalar_gives_the_bytes_encode_gives(obj):
    assert value.encode_scalar(obj) == value.encode(obj)


@pytest.mark.parametrize("obj", [
    2 ** 64, -(2 ** 63) - 1, "\ud800", [1.0], {"a": 1}, (1,), bytearray(b"x"), 1 + 2j,
    helpers.Box(1), Float(2.5),
])
def test_encode_scalar_leaves_everything_else_to_the_encoder(obj):
    assert value.encode_scalar(obj) is None


@pytest.mark.parametrize("module", [plain_module, value])
def test_the_examples_in_the_docstrings_run(module):
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0
