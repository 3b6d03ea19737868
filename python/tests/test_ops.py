"""The request handlers in process: ``Ops.handle`` on raw MessagePack bodies."""

import math

import msgpack
import pytest

import pyvisor_test_helpers as helpers
from pyvisor_test_replies import as_body_reply
from pyvisor_worker import value
from pyvisor_worker.ops import Ops
from pyvisor_worker.policy import NotAllowed, Policy
from pyvisor_worker.protocol import (
    CALL, CALL_METHOD, CONTEXT, GET_ATTR, RELEASE, SET_ATTR, STREAM_NEXT, ProtocolError,
)
from pyvisor_worker.refs import Registry
from pyvisor_worker.value import RefHandle

H = "pyvisor_test_helpers"


def pack(body):
    def default(obj):
        if isinstance(obj, RefHandle):
            code = value.STREAM_REF if obj.stream else value.REF
            return msgpack.ExtType(code, msgpack.packb(obj.payload))
        if isinstance(obj, tuple):
            return msgpack.ExtType(value.TUPLE, pack(list(obj)))
        if isinstance(obj, set):
            return msgpack.ExtType(value.SET, pack(list(obj)))
        raise TypeError(type(obj))

    return msgpack.packb(body, use_bin_type=True, strict_types=True, default=default)


class Client:
    def __init__(self, ops=None):
        self.ops = ops or Ops(Registry(), Policy(allow_eval=True))
        self.next_id = 1

    def raw(self, op, body):
        self.next_id += 1
        # The C accelerator's reply, the complete OK frame, is checked and unwrapped.
        ok, reply = as_body_reply(self.ops.handle(op, self.next_id, pack(body)), self.next_id)
        return ok, value.decode(reply) if ok else reply

    def ok(self, op, body):
        ok, reply = self.raw(op, body)
        assert ok, reply
        return reply

    def err(self, op, body, kind):
        ok, reply = self.raw(op, body)
        assert not ok, reply
        assert reply["kind"] == kind, reply
        return reply

    def call(self, module, function, *args, session=None, **kwargs):
        return self.ok(CALL, {"module": module, "function": function, "args": list(args),
                              "kwargs": kwargs, "session": session})


@pytest.fixture
def client():
    helpers.SETTING = "default"
    helpers.ENTERED.clear()
    return Client()


def test_call_still_works(client):
    assert client.call("math", "sqrt", 16.0) == 4.0


def test_call_method_and_get_attr_on_a_ref(client):
    ref = client.call(H, "pattern", "a+b", session="s")
    assert isinstance(ref, RefHandle) and ref.payload["type"] == "Pattern"
    match = client.ok(CALL_METHOD, {"target": ref, "method": "match", "args": ["aaab"],
                                    "kwargs": None, "session": "s"})
    assert isinstance(match, RefHandle) and match.payload["type"] == "Match"
    group = client.ok(CALL_METHOD, {"target": match, "method": "group", "args": None,
                                    "kwargs": {}, "session": "s"})
    assert group == "aaab"
    assert client.ok(GET_ATTR, {"target": ref, "name": "pattern", "session": "s"}) == "a+b"


def test_set_attr(client):
    box = client.call(H, "Box", [1])
    assert client.ok(SET_ATTR, {"target": box, "name": "content", "value": (2, {3}),
                                "session": None}) is None
    assert client.ok(CALL_METHOD, {"target": box, "method": "get", "session": None}) == (2, {3})


def test_get_attr_on_a_module(client):
    assert client.ok(GET_ATTR, {"target": "math", "name": "pi", "session": None}) == math.pi
    assert client.ok(GET_ATTR, {"target": "os", "name": "path.sep", "session": None}) == "/"


def test_a_ref_is_resolved_wherever_it_is_nested(client):
    ref = client.call(H, "pattern", "x+")
    back = client.call(H, "echo", [{"deep": (ref,)}], k={ref: "as key"})
    args, kwargs = back
    assert isinstance(args[0][0]["deep"][0], RefHandle)  # the same Pattern, re-encoded
    assert args[0][0]["deep"][0].payload["type"] == "Pattern"
    result = client.ok(CALL, {"module": "builtins", "function": "eval",
                              "args": ["p.fullmatch('xxx') is not None", {"p": ref}],
                              "session": None})
    assert result is True


def test_a_positional_call_body_is_the_map_body(client):
    """``[module, function, args, kwargs, session]``, as the host sends it, also on the general
    path (a ref argument) and with errors (a session mismatch, a wrong length)."""
    ref = client.call(H, "Box", "inside", session="s1")
    assert isinstance(ref, RefHandle)
    got = client.ok(CALL, [H, "echo", [ref], {"k": 1}, "s1"])
    assert got[0][0].payload["type"] == "Box" and got[1] == {"k": 1}  # resolved, re-encoded
    client.err(CALL, [H, "echo", [ref], None, "s2"], "ref_session_mismatch")
    err = client.err(CALL, ["math", "sqrt", [4.0], None], "bad_request")
    assert "5 elements" in err["message"]
    assert client.ok(CALL, ["math", "sqrt", [4.0], None, None]) == 2.0


def test_errors_of_refs(client):
    ref = client.call(H, "pattern", "a", session="s1")
    err = client.err(CALL_METHOD, {"target": ref, "method": "match", "args": ["a"],
                                   "session": "s2"}, "ref_session_mismatch")
    assert str(ref.id) in err["message"]
    client.err(CALL, {"module": H, "function": "echo", "args": [ref], "session": None},
               "ref_session_mismatch")
    assert client.ok(RELEASE, {"session": "s1", "refs": [ref.id]}) == 1
    err = client.err(CALL_METHOD, {"target": ref, "method": "match", "args": ["a"],
                                   "session": "s1"}, "ref_not_found")
    assert str(ref.id) in err["message"]
    assert err["type"] == "" and err["traceback"] == ""


def test_targets_must_be_refs(client):
    client.err(CALL_METHOD, {"target": "abc", "method": "upper", "session": None}, "bad_request")
    client.err(SET_ATTR, {"target": [1], "name": "x", "value": 1, "session": None}, "bad_request")
    client.err(STREAM_NEXT, {"target": [1, 2], "max": 1, "session": None}, "bad_request")
    client.err(GET_ATTR, {"target": 5, "name": "x", "session": None}, "bad_request")
    ref = client.call(H, "Box")
    client.err(SET_ATTR, {"target": ref, "name": "x", "session": None}, "bad_request")
    client.err(CALL_METHOD, {"target": ref, "session": None}, "bad_request")


@pytest.mark.parametrize("op", [CALL, CALL_METHOD, GET_ATTR, SET_ATTR, RELEASE, STREAM_NEXT,
                                CONTEXT])
def test_bodies_must_be_maps_with_a_string_session(client, op):
    client.err(op, [1, 2], "bad_request")
    client.err(op, "not a map", "bad_request")
    if op != CALL:  # only CALL has a positional form
        client.err(op, ["math", "sqrt", [4.0], None, None], "bad_request")
    client.err(op, {"session": 5, "module": "math", "function": "sqrt"}, "bad_request")


def test_exceptions_in_methods_are_exception_errors(client):
    ref = client.call(H, "Box")
    err = client.err(CALL_METHOD, {"target": ref, "method": "nope", "session": None},
                     "exception")
    assert err["type"] == "AttributeError"
    assert err["traceback"].count("File ") == 1  # only the frame that raised, not the worker's
    err = client.err(CALL_METHOD, {"target": ref, "method": "__init__", "args": [1, 2],
                                   "session": None}, "exception")
    assert err["type"] == "TypeError"


def test_release_whole_session_and_counts(client):
    refs = [client.call(H, "Box", i, session="s") for i in range(3)]
    other = client.call(H, "Box", 9, session="t")
    assert client.ok(RELEASE, {"session": "s", "refs": [refs[0].id, 12345, other.id]}) == 1
    assert client.ok(RELEASE, {"session": "s", "refs": None}) == 2
    assert client.ok(RELEASE, {"session": "s", "refs": None}) == 0
    assert client.ok(GET_ATTR, {"target": other, "name": "content", "session": "t"}) == 9
    client.err(RELEASE, {"session": "s", "refs": ["x"]}, "bad_request")


def test_stream_next_batches_until_done(client):
    stream = client.call(H, "count", 7, session="s")
    assert stream.stream and stream.payload["type"] == "generator"
    batches = []
    while True:
        batch = client.ok(STREAM_NEXT, {"target": stream, "max": 3, "session": "s"})
        batches.append(batch)
        if batch["done"]:
            break
    assert batches == [{"items": [0, 1, 2], "done": False}, {"items": [3, 4, 5], "done": False},
                       {"items": [6], "done": True}]
    assert stream.id not in client.ops.registry  # released once exhausted
    client.err(STREAM_NEXT, {"target": stream, "max": 3, "session": "s"}, "ref_not_found")


def test_stream_items_are_serialized_gracefully(client):
    stream = client.call(H, "stream_in_a_dict", 2)["stream"]
    assert client.ok(STREAM_NEXT, {"target": stream, "max": 0, "session": None}) == {
        "items": [0], "done": False}
    gen = client.call(H, "iter_patterns", "a", "b")
    batch = client.ok(STREAM_NEXT, {"target": gen, "max": 10, "session": None})
    assert batch["done"] and [r.payload["type"] for r in batch["items"]] == ["Pattern", "Pattern"]


def test_a_stream_that_raises_is_an_error_and_stays_registered(client):
    stream = client.call(H, "count_then_fail", 2)
    # The items before the failure come first; the failure is the next reply.
    assert client.ok(STREAM_NEXT, {"target": stream, "max": 5, "session": None}) == {
        "items": [0, 1], "done": False}
    err = client.err(STREAM_NEXT, {"target": stream, "max": 5, "session": None}, "exception")
    assert (err["type"], err["message"]) == ("ValueError", "failed after 2")
    assert "count_then_fail" in err["traceback"] and "ops.py" not in err["traceback"]
    assert stream.id in client.ops.registry
    assert client.ok(STREAM_NEXT, {"target": stream, "max": 5, "session": None}) == {
        "items": [], "done": True}
    assert stream.id not in client.ops.registry


def test_a_stream_that_raises_at_once_is_an_error(client):
    stream = client.call(H, "count_then_fail", 0)
    err = client.err(STREAM_NEXT, {"target": stream, "max": 5, "session": None}, "exception")
    assert err["message"] == "failed after 0"
    assert stream.id in client.ops.registry


def test_a_pending_stream_failure_is_dropped_with_its_ref(client):
    stream = client.call(H, "count_then_fail", 1)
    client.ok(STREAM_NEXT, {"target": stream, "max": 5, "session": None})
    assert client.ok(RELEASE, {"session": None, "refs": [stream.id]}) == 1
    other = client.call(H, "count", 1)
    client.ok(STREAM_NEXT, {"target": other, "max": 5, "session": None})
    assert client.ops._pending == {}


def context(session, value_):
    return {"session": session, "module": H, "function": "setting", "args": [value_],
            "kwargs": None}


def test_contexts_are_per_session_and_re_created_per_request(client):
    assert client.ok(CONTEXT, context("s1", "one")) is None
    assert client.ok(CONTEXT, context("s2", "two")) is None
    assert helpers.entered() == ["one", "two"]  # each checked once when added
    assert client.call(H, "get_setting", session="s1") == "one"
    assert client.call(H, "get_setting", session="s2") == "two"
    assert client.call(H, "get_setting", session="s1") == "one"
    assert client.call(H, "get_setting") == "default"
    assert helpers.SETTING == "default"  # exited after every request
    assert helpers.entered() == ["one", "two", "one", "two", "one"]


def test_contexts_nest_in_order_and_apply_to_every_op(client):
    client.ok(CONTEXT, context("s", "outer"))
    client.ok(CONTEXT, context("s", "inner"))
    assert client.call(H, "get_setting", session="s") == "inner"
    box = client.call(H, "Box", session="s")
    helpers.ENTERED.clear()
    client.ok(GET_ATTR, {"target": box, "name": "content", "session": "s"})
    assert helpers.entered() == ["outer", "inner"]
    client.ok(RELEASE, {"session": "s", "refs": []})  # RELEASE runs outside the contexts
    assert helpers.entered() == ["outer", "inner"]


def test_a_context_that_fails_is_not_added(client):
    err = client.err(CONTEXT, {"session": "s", "module": H, "function": "broken_context"},
                     "exception")
    assert err["message"] == "cannot enter"
    client.err(CONTEXT, {"session": "s", "module": H, "function": "not_a_context"}, "exception")
    assert client.call(H, "get_setting", session="s") == "default"


def test_module_nil_clears_and_release_drops_contexts(client):
    client.ok(CONTEXT, context("s", "one"))
    client.ok(CONTEXT, {"session": "s", "module": None})
    assert client.call(H, "get_setting", session="s") == "default"
    client.ok(CONTEXT, context("s", "two"))
    client.ok(RELEASE, {"session": "s", "refs": None})
    assert client.call(H, "get_setting", session="s") == "default"
    client.err(CONTEXT, context(None, "x"), "bad_request")


def test_refs_in_context_arguments_are_resolved(client):
    box = client.call(H, "Box", "boxed", session="s")
    client.ok(CONTEXT, {"session": "s", "module": H, "function": "setting", "args": [box]})
    current = client.call(H, "get_setting", session="s")  # the Box itself, as a new ref
    assert current.payload["type"] == "Box" and current.id != box.id
    assert client.ok(GET_ATTR, {"target": current, "name": "content", "session": "s"}) == "boxed"


def test_unknown_ops_are_not_decoded(client):
    ok, err = client.ops.handle(13, 1, b"\xc1")
    assert not ok and err["kind"] == "unknown_op" and "13" in err["message"]


def test_bad_ext_payloads_are_bad_requests(client):
    body = msgpack.packb({"module": "math", "function": "sqrt",
                          "args": [msgpack.ExtType(value.BIGINT, b"x1")]})
    ok, err = client.ops.handle(CALL, 1, body)
    assert not ok and err["kind"] == "bad_request" and "BIGINT" in err["message"]


def test_a_body_that_is_not_one_msgpack_value_is_a_protocol_error(client):
    with pytest.raises(ProtocolError):
        client.ops.handle(CALL, 1, msgpack.packb({"module": "m"}) + b"\x00")
    with pytest.raises(ProtocolError):
        client.ops.handle(CALL, 1, b"\x82\xa1a")


def test_a_result_too_large_for_a_frame_rolls_its_refs_back():
    client = Client(Ops(Registry(), Policy(), max_frame=300))
    err = client.err(CALL, {"module": H, "function": "patterns_in_data",
                            "args": ["a" * 100, "b" * 100, "c" * 100]}, "frame_too_large")
    assert err["type"] == "list" and "300" in err["message"]
    assert len(client.ops.registry) == 0


# -- policy ----------------------------------------------------------------------------------------


def test_the_allowlist_matches_packages_by_prefix():
    policy = Policy(["numpy", " json ", ""], allow_eval=False)
    for module in ("numpy", "numpy.linalg", "json", "json.decoder"):
        policy.check(module, "x")
    for module in ("numpyx", "nump", "os", "builtins"):
        with pytest.raises(NotAllowed) as info:
            policy.check(module, "x")
        assert repr(module) in str(info.value) and "PYVISOR_ALLOW_MODULES" in str(info.value)


@pytest.mark.parametrize("name", ["eval", "exec", "compile", "eval.__call__"])
def test_eval_needs_its_switch(name):
    with pytest.raises(NotAllowed) as info:
        Policy().check("builtins", name)
    assert f"builtins.{name.split('.')[0]}" in str(info.value)
    assert "PYVISOR_ALLOW_EVAL" in str(info.value)
    Policy(allow_eval=True).check("builtins", name)
    Policy().check("builtins", "len")


def test_policy_from_the_environment(monkeypatch):
    monkeypatch.setenv("PYVISOR_ALLOW_MODULES", "math, builtins")
    monkeypatch.setenv("PYVISOR_ALLOW_EVAL", "1")
    policy = Policy.from_env()
    assert policy.allow_modules == ("math", "builtins") and policy.allow_eval
    monkeypatch.setenv("PYVISOR_ALLOW_MODULES", "")
    monkeypatch.setenv("PYVISOR_ALLOW_EVAL", "true")
    policy = Policy.from_env()
    assert policy.allow_modules is None and not policy.allow_eval


def test_policy_applies_to_call_get_attr_on_modules_and_context():
    client = Client(Ops(Registry(), Policy(["math", H])))
    assert client.call("math", "sqrt", 4.0) == 2.0
    err = client.err(CALL, {"module": "os", "function": "getcwd"}, "not_allowed")
    assert "'os'" in err["message"]
    client.err(GET_ATTR, {"target": "os", "name": "sep", "session": None}, "not_allowed")
    client.err(CALL, {"module": "builtins", "function": "len", "args": [[1]]}, "not_allowed")
    client.err(CONTEXT, {"session": "s", "module": "decimal", "function": "localcontext"},
               "not_allowed")
    # Methods and attributes of refs are not restricted.
    box = client.call(H, "Box", "x")
    assert client.ok(GET_ATTR, {"target": box, "name": "__class__", "session": None}).payload[
        "type"] == "type"


def test_a_refused_module_is_not_imported():
    import sys

    client = Client(Ops(Registry(), Policy(["math"])))
    client.err(CALL, {"module": "pyvisor_test_never_imported", "function": "f"}, "not_allowed")
    assert "pyvisor_test_never_imported" not in sys.modules


def test_eval_is_refused_by_default():
    client = Client(Ops(Registry(), Policy()))
    err = client.err(CALL, {"module": "builtins", "function": "eval", "args": ["1"]},
                     "not_allowed")
    assert "builtins.eval" in err["message"]
    client.err(GET_ATTR, {"target": "builtins", "name": "exec", "session": None}, "not_allowed")


def test_dspy_context_per_session(client):
    pytest.importorskip("dspy")
    lm_a = client.call("dspy", "LM", "openai/model-a", session="a")
    lm_b = client.call("dspy", "LM", "openai/model-b", session="b")
    assert lm_a.payload["type"] == "LM" and lm_a.payload["module"].startswith("dspy")
    for session, lm in (("a", lm_a), ("b", lm_b)):
        client.ok(CONTEXT, {"session": session, "module": "dspy", "function": "context",
                            "kwargs": {"lm": lm}})
    for _ in range(2):  # dspy.context is single use: the factory makes a fresh one every time
        for session, model in (("a", "openai/model-a"), ("b", "openai/model-b")):
            assert client.ok(GET_ATTR, {"target": "dspy", "name": "settings.lm.model",
                                        "session": session}) == model
    assert client.ok(GET_ATTR, {"target": "dspy", "name": "settings.lm",
                                "session": None}) is None
