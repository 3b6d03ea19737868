import os

import pytest

import pyvisor_test_helpers
from pyvisor_worker import calls
from pyvisor_worker.calls import BadRequest, execute, parse_call, resolve

KEYS = {"kind", "type", "module", "message", "traceback"}


def call(module, function, args=(), kwargs=None, session=None):
    return execute({"module": module, "function": function, "args": list(args),
                    "kwargs": kwargs, "session": session})


def test_a_call_returns_its_result():
    assert call("math", "sqrt", [16.0]) == (True, 4.0)


def test_dotted_function_and_kwargs():
    assert call("os", "path.join", ["a", "b"]) == (True, os.path.join("a", "b"))
    assert call("pyvisor_test_helpers", "echo", [1], {"k": 2}) == (True, [[1], {"k": 2}])
    assert call("pyvisor_test_helpers", "Outer.Boom") [0] is True


def test_nil_or_missing_kwargs_and_session_mean_none():
    assert execute({"module": "math", "function": "sqrt", "args": [4.0]}) == (True, 2.0)
    assert execute({"module": "math", "function": "sqrt", "args": [4.0], "kwargs": None,
                    "session": None}) == (True, 2.0)


@pytest.mark.parametrize("body", [
    {"module": "time", "function": "time", "args": None, "kwargs": None},
    {"module": "time", "function": "time"},
])
def test_nil_or_missing_args_mean_no_positional_arguments(body):
    ok, result = execute(body)
    assert ok and isinstance(result, float)
    assert execute({"module": "pyvisor_test_helpers", "function": "echo", "args": None,
                    "kwargs": {"k": 1}}) == (True, [[], {"k": 1}])
    assert call("math", "sqrt", [4.0], None, "s1") == (True, 2.0)


def test_an_exception_is_a_structured_error():
    ok, err = call("pyvisor_test_helpers", "boom", ["bad thing"])
    assert not ok
    assert set(err) == KEYS
    assert err["kind"] == "exception"
    assert err["type"] == "Outer.Boom"
    assert err["module"] == "pyvisor_test_helpers"
    assert err["message"] == "bad thing"
    tb = err["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert "in boom" in tb
    assert tb.rstrip().endswith("pyvisor_test_helpers.Outer.Boom: bad thing")
    assert "calls.py" not in tb  # the worker's own frame is left out


def test_a_missing_module_is_module_not_found():
    ok, err = call("pyvisor_no_such_module_xyz", "f")
    assert not ok
    assert (err["kind"], err["type"], err["module"]) == (
        "exception", "ModuleNotFoundError", "builtins")
    assert "pyvisor_no_such_module_xyz" in err["message"]


@pytest.mark.parametrize("function, missing", [
    ("no_such_fn", "no_such_fn"),
    ("path.no_such_fn", "no_such_fn"),
    ("nope.join", "nope"),
])
def test_a_missing_attribute_names_the_module_and_the_path(function, missing):
    ok, err = call("os", function)
    assert not ok
    assert (err["kind"], err["type"]) == ("exception", "AttributeError")
    assert "'os'" in err["message"]
    assert repr(function) in err["message"]
    assert repr(missing) in err["message"]


def test_system_exit_is_reported_not_raised():
    ok, err = call("pyvisor_test_helpers", "exit_now", [2])
    assert not ok
    assert (err["kind"], err["type"], err["message"]) == ("exception", "SystemExit", "2")


def test_keyboard_interrupt_propagates(monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(pyvisor_test_helpers, "interrupted", interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        call("pyvisor_test_helpers", "interrupted")


def test_a_broken_str_does_not_break_the_error(monkeypatch):
    class Weird(Exception):
        def __str__(self):
            raise RuntimeError("no str for you")

    def raise_weird():
        raise Weird()

    monkeypatch.setattr(pyvisor_test_helpers, "raise_weird", raise_weird, raising=False)
    ok, err = call("pyvisor_test_helpers", "raise_weird")
    assert not ok and err["type"].endswith("Weird") and isinstance(err["message"], str)


def test_the_resolved_function_is_looked_up_every_time(monkeypatch):
    assert call("pyvisor_test_helpers", "returns_set")[1] == {1, 2}
    monkeypatch.setattr(pyvisor_test_helpers, "returns_set", lambda: "patched")
    assert call("pyvisor_test_helpers", "returns_set") == (True, "patched")


@pytest.mark.parametrize("body", [
    None,
    "x",
    [1, 2],
    {"function": "sqrt", "args": []},
    {"module": "math", "args": []},
    {"module": "", "function": "sqrt", "args": []},
    {"module": "math", "function": "", "args": []},
    {"module": b"math", "function": "sqrt", "args": []},
    {"module": "math", "function": 1, "args": []},
    {"module": "math", "function": "sqrt", "args": "abc"},
    {"module": "math", "function": "sqrt", "args": [], "kwargs": []},
    {"module": "math", "function": "sqrt", "args": [], "kwargs": {1: 2}},
    {"module": "math", "function": "sqrt", "args": [], "session": 5},
])
def test_malformed_bodies_are_bad_requests(body):
    with pytest.raises(BadRequest):
        parse_call(body)
    ok, err = execute(body)
    assert not ok
    assert set(err) == KEYS
    assert err["kind"] == "bad_request"
    assert err["message"]


def test_resolve_uses_already_imported_modules_and_imports_new_ones():
    assert resolve("os", "path.join") is os.path.join
    assert resolve("colorsys", "rgb_to_hsv").__name__ == "rgb_to_hsv"


def test_error_map_always_has_every_key():
    assert calls.error_map("unknown_op", message="unknown op 9") == {
        "kind": "unknown_op", "type": "", "module": "", "message": "unknown op 9",
        "traceback": ""}
