"""The plain path: which ``CALL`` bodies it takes, and that it answers exactly as the general
path does; and that the C accelerator (``_plainc``, ``accel.py``) answers as both."""

import doctest
import math

import msgpack
import pytest

import pyvisor_test_helpers as helpers
import pyvisor_test_plainc  # noqa: F401 - imported: the C accelerator takes imported modules only
from pyvisor_test_replies import Counting, as_body_reply
from pyvisor_worker import accel, calls
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
P = "pyvisor_test_plainc"
C_PATH = accel.available()
"""The C accelerator, named explicitly: the tests must not depend on PYVISOR_WORKER_PURE."""


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

# Scalars of every kind, as the C accelerator frames them itself.
BODIES += [
    {"module": P, "function": "ident", "args": [x]} for x in [
        0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1, 2 ** 64 - 1,
        -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 63),
        0.0, -0.0, 1.5, float("inf"), float("-inf"), float("nan"), True, False, None,
        "", "a", "\u00e9t\u00e9 \U0001F600", "y" * 31, "y" * 32, "y" * 255, "y" * 256,
        b"", b"\x00\xff", b"b" * 255, b"b" * 256,
    ]
]
BODIES += [
    {"module": P, "function": "sized_str", "args": [70000, "\u00e9"]},  # a str32 result
    {"module": P, "function": "sized_bytes", "args": [70000]},  # a bin32 result
    {"module": P, "function": "plus", "kwargs": {"a": 2, "b": 3}, "session": "s"},
    {"module": P, "function": "const_big"},  # beyond 64 bits: BIGINT
    {"module": P, "function": "const_list"},
    {"module": P, "function": "const_dict"},
    {"module": P, "function": "surrogate"},
    {"module": P, "function": "sub_str"},
    {"module": P, "function": "sub_int"},
    {"module": P, "function": "sub_float"},
    {"module": P, "function": "returns_object", "session": "s"},  # a ref in a session
    {"module": P, "function": "lazy", "args": [1.25]},  # found by the module __getattr__
    {"module": P, "function": "lazy_fails"},  # the module __getattr__ raises
    {"module": P, "function": "not_there"},  # the module __getattr__: AttributeError
    {"module": P, "function": "system_exit"},
    {"module": P, "function": "ident", "args": [1], "kwargs": {"x": 2}},  # TypeError
    {"module": P, "function": "ident", "kwargs": {"y": 2}},  # TypeError
    {"module": P, "function": "ident", "kwargs": {"x": "by name"}},
    {"module": "math", "function": "sqrt", "kwargs": {"x": 4.0}},  # a builtin refuses kwargs
    {"module": "math", "function": "floor", "args": [float("inf")]},  # OverflowError from C
    {"module": "math", "function": "pi"},  # not callable
    {"module": "math", "function": "__name__"},  # not callable either
    {"module": "os.path", "function": "join", "args": ["a", "b"]},
    {"module": "os", "function": "path.join", "args": ["a", "b"]},  # dotted
]

POLICIES = {
    "allowlist": lambda: Policy(allow_modules=["math", "os", "builtins", H, P]),
    "open": Policy,  # no allowlist: Policy.check's fast return
}


def positional(b):
    """The body as the host sends it, ``[module, function, args, kwargs, session]``."""
    return [b.get(field) for field in calls.CALL_FIELDS]


PATHS = ["c", "plain", "general"]
"""The C accelerator (then the Python paths behind it), the Python plain path (then the general
path), and the general path alone."""


def make_ops(path, policy, monkeypatch):
    """An ``Ops`` that answers calls on ``path`` (``PATHS``)."""
    if path == "general":
        monkeypatch.setattr(ops_module, "plain_call", lambda raw, contexts: None)
    else:
        monkeypatch.setattr(ops_module, "plain_call", plain_call)
    accelerator = Counting(C_PATH) if path == "c" else None
    return Ops(Registry(), POLICIES[policy](), accelerator=accelerator)


def run_all(bodies, policy, path, monkeypatch):
    """The replies to ``bodies`` on ``path``, C frames turned into OK bodies, and the ``Ops``."""
    ops = make_ops(path, policy, monkeypatch)
    replies = []
    for i, b in enumerate(bodies):
        raw = msgpack.packb(b)
        payload = protocol.encode_envelope(CALL, 1000 + i, raw)
        # The body as the channel gives it: bytes, or a view on a large payload.
        reply = ops.handle(CALL, 1000 + i, protocol.split_envelope(payload)[2])
        replies.append(as_body_reply(reply, 1000 + i))
    return replies, ops


ODD_POSITIONAL = [
    [], ["math", "sqrt", [2.0], None], ["math", "sqrt", [2.0], None, None, None],
    [None, "sqrt", [2.0], None, None], ["math", "sqrt", [2.0], None, 5],
    ["math", "sqrt", {"a": 1}, None, None], ["math", "sqrt", [2.0], {b"k": 1}, None],
    [H, "echo", [msgpack.ExtType(value.TUPLE, msgpack.packb([1]))], None, "s"],
]


def test_odd_positional_bodies_get_the_general_paths_answer(monkeypatch):
    """Wrong lengths, a nil module, a bad session, bytes keys, ext values: the C accelerator and
    the plain path decline them, and the reply is the general path's."""
    raws = [msgpack.packb(b, use_bin_type=True) for b in ODD_POSITIONAL]
    assert [plain_call(raw, {}) for raw in raws] == [None] * len(raws)
    assert [C_PATH(raw, 7, {}, 1 << 20) for raw in raws] == [None] * len(raws)
    fast = [Ops(Registry(), Policy(), accelerator=C_PATH).handle(CALL, 7, raw) for raw in raws]
    monkeypatch.setattr(ops_module, "plain_call", lambda raw, contexts: None)
    general = [Ops(Registry(), Policy(), accelerator=None).handle(CALL, 7, raw) for raw in raws]
    assert fast == general
    assert [ok for ok, _ in general].count(False) >= 6


@pytest.mark.parametrize("form", ["positional", "map"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_the_c_accelerator_and_the_plain_path_answer_as_the_general_path(
        monkeypatch, policy, form):
    """Every body gets the same reply on all three paths: OK bodies byte for byte, error maps
    equal, traceback text included."""
    bodies = [positional(b) for b in BODIES] if form == "positional" else BODIES
    replies = {}
    for path in PATHS:
        replies[path], ops = run_all(bodies, policy, path, monkeypatch)
        if path == "c":
            counted = ops.accelerator
    for i, b in enumerate(bodies):
        assert replies["plain"][i] == replies["general"][i], (i, b)
        assert replies["c"][i] == replies["general"][i], (i, b)
    oks = [ok for ok, _ in replies["general"]]
    assert oks.count(True) >= 40 and oks.count(False) >= 15  # both kinds of reply were compared
    if policy == "allowlist":  # the C accelerator does not check an allowlist: never used
        assert counted is None
    else:
        kinds = counted.kinds
        assert sum(kinds.values()) == len(bodies)
        assert kinds["frame"] >= 40, kinds  # the C accelerator's own replies were compared
        assert kinds["result"] >= 8 and kinds["failure"] >= 8, kinds
        assert kinds["declined"] >= 8, kinds  # and left the others to the Python paths


@pytest.mark.parametrize("path", PATHS)
def test_keyboard_interrupt_escapes_every_path(monkeypatch, path):
    ops = make_ops(path, "open", monkeypatch)
    for function in ["interrupt", "lazy_interrupt"]:  # the function, or the module __getattr__
        with pytest.raises(KeyboardInterrupt):
            ops.handle(CALL, 1, body(module=P, function=function))
    if path == "c":
        assert ops.accelerator.kinds["declined"] == 0


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
    ops = Ops(Registry(), Policy(), accelerator=None)

    def no_general_decode(*args):
        raise AssertionError("the general path decoded a plain call")

    monkeypatch.setattr(ops, "_decode", no_general_decode)
    ok, reply = ops.handle(CALL, 7, body(args=[2.0], session="s1"))
    assert ok is True and value.decode(reply) == math.sqrt(2.0)


def test_a_call_the_c_accelerator_takes_is_decoded_by_no_python_path(monkeypatch):
    ops = Ops(Registry(), Policy(), accelerator=C_PATH)

    def no_python_decode(*args):
        raise AssertionError("a Python path decoded a call the C accelerator takes")

    monkeypatch.setattr(ops, "_decode", no_python_decode)
    monkeypatch.setattr(ops_module, "plain_call", no_python_decode)
    reply = ops.handle(CALL, 7, body(args=[2.0], session="s1"))
    assert reply[0] is None
    ok, body_bytes = as_body_reply(reply, 7)
    assert value.decode(body_bytes) == math.sqrt(2.0)


@pytest.mark.parametrize("accelerator", [C_PATH, None], ids=["c", "python"])
def test_contexts_still_apply_to_plain_bodies(accelerator):
    ops = Ops(Registry(), Policy(), accelerator=accelerator)
    ok, _ = ops.handle(CONTEXT, 1, msgpack.packb({
        "module": H, "function": "setting", "args": ["ctx"], "session": "s1"}))
    assert ok
    ok, reply = as_body_reply(
        ops.handle(CALL, 2, body(module=H, function="get_setting", session="s1")), 2)
    assert ok and value.decode(reply) == "ctx"
    ok, reply = as_body_reply(
        ops.handle(CALL, 3, body(module=H, function="get_setting", session="s2")), 3)
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
