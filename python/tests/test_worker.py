"""End-to-end tests: a real ``python -m pyvisor_worker`` subprocess over two os.pipe() pairs.

The host side here is written independently of ``pyvisor_worker.protocol`` (plain struct and
msgpack), so a symmetric framing bug on the worker side cannot hide itself.
"""

import os
import platform
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import pytest

READY, CALL, OK, ERROR, PING, PONG, SHUTDOWN = range(7)
CALL_METHOD, GET_ATTR, SET_ATTR, RELEASE, STREAM_NEXT, CONTEXT = range(7, 13)
EXT_TUPLE, EXT_SET, EXT_REF, EXT_STREAM_REF = 1, 2, 10, 11

TESTS_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = TESTS_DIR.parent
TIMEOUT = 20.0  # failure guard for every wait; tests normally finish far sooner


class HostRef:
    """A ref as the host sees it: the ext code and the payload map, sent back as received."""

    def __init__(self, code, payload):
        self.code = code
        self.payload = payload

    @property
    def id(self):
        return self.payload["id"]

    @property
    def stream(self):
        return self.code == EXT_STREAM_REF

    def __repr__(self):
        return f"HostRef({self.code}, {self.payload!r})"


def _ext_hook(code, data):
    if code in (EXT_REF, EXT_STREAM_REF):
        return HostRef(code, msgpack.unpackb(data, raw=False))
    if code == EXT_TUPLE:
        return tuple(msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook))
    if code == EXT_SET:
        return set(msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook))
    return msgpack.ExtType(code, data)


def _default(obj):
    if isinstance(obj, HostRef):
        return msgpack.ExtType(obj.code, msgpack.packb(obj.payload))
    raise TypeError(f"test host cannot send {type(obj).__name__}")


class Worker:
    """The host side of one worker process."""

    def __init__(self, env=None, unset=()):
        to_worker_r, self.to_worker = os.pipe()
        self.from_worker, from_worker_w = os.pipe()
        full_env = dict(os.environ)
        full_env.update(
            PYVISOR_FD_IN=str(to_worker_r),
            PYVISOR_FD_OUT=str(from_worker_w),
            PYVISOR_PROTOCOL="1",
            PYVISOR_POOL="test",
            PYVISOR_SLOT="0",
            PYVISOR_GENERATION="1",
            PYTHONPATH=os.pathsep.join(
                p for p in (str(TESTS_DIR), str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        )
        full_env.pop("PYVISOR_PRELOAD", None)
        full_env.pop("PYTHONUNBUFFERED", None)  # the host does not promise it: stdout is a pipe
        full_env.pop("PYVISOR_MAX_FRAME", None)
        full_env.update(env or {})
        for name in unset:
            full_env.pop(name, None)
        self.stdout = tempfile.TemporaryFile()
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pyvisor_worker"],
                pass_fds=(to_worker_r, from_worker_w),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=self.stdout,
                stderr=self.stderr,
            )
        finally:
            os.close(to_worker_r)
            os.close(from_worker_w)

    # -- sending --------------------------------------------------------------------------------

    def send_raw(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.to_worker, view):]

    def send(self, op, request_id, body=None):
        payload = msgpack.packb([op, request_id, body], use_bin_type=True, default=_default)
        self.send_raw(struct.pack(">I", len(payload)) + payload)

    def call(self, request_id, module, function, args=(), kwargs=None, session=None):
        self.send(CALL, request_id, {
            "module": module, "function": function, "args": list(args),
            "kwargs": kwargs, "session": session,
        })

    def request(self, op, request_id, body):
        """Send one request and return the body of its OK reply (asserting that it is OK)."""
        self.send(op, request_id, body)
        reply = self.recv()
        assert reply is not None, f"no reply; stderr:\n{self.err()}"
        assert reply[:2] == (OK, request_id), reply
        return reply[2]

    def failing(self, op, request_id, body, kind):
        """Send one request and return its ERROR body, asserting its kind."""
        self.send(op, request_id, body)
        reply = self.recv()
        assert reply is not None, f"no reply; stderr:\n{self.err()}"
        assert reply[:2] == (ERROR, request_id) and reply[2]["kind"] == kind, reply
        return reply[2]

    def close_input(self):
        if self.to_worker is not None:
            os.close(self.to_worker)
            self.to_worker = None

    # -- receiving ------------------------------------------------------------------------------

    def _read_exact(self, n, deadline):
        chunks, got = [], 0
        while got < n:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.from_worker], [], [], max(0.0, remaining))
            if not ready:
                raise AssertionError(f"timed out waiting for the worker; stderr:\n{self.err()}")
            chunk = os.read(self.from_worker, n - got)
            if not chunk:
                if got == 0:
                    return None
                raise AssertionError(f"worker closed its channel inside a frame ({got}/{n})")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def recv(self, timeout=TIMEOUT):
        """The next ``[op, id, body]`` from the worker, or ``None`` at end of stream."""
        deadline = time.monotonic() + timeout
        head = self._read_exact(4, deadline)
        if head is None:
            return None
        (size,) = struct.unpack(">I", head)
        payload = self._read_exact(size, deadline)
        assert payload is not None, "end of stream after a frame header"
        message = msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=_ext_hook)
        assert isinstance(message, list) and len(message) == 3, message
        return tuple(message)

    def handshake(self):
        message = self.recv()
        assert message is not None, f"no READY; stderr:\n{self.err()}"
        assert message[:2] == (READY, 0), message
        return message[2]

    # -- process --------------------------------------------------------------------------------

    def wait(self, timeout=TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit; stderr:\n{self.err()}") from None

    def out(self):
        self.stdout.seek(0)
        return self.stdout.read().decode("utf-8", "replace")

    def err(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close_input()
        os.close(self.from_worker)
        self.stdout.close()
        self.stderr.close()


@pytest.fixture
def spawn():
    workers = []

    def start(**kwargs):
        worker = Worker(**kwargs)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.cleanup()


@pytest.fixture
def worker(spawn):
    w = spawn()
    w.handshake()
    return w


# -- handshake ----------------------------------------------------------------------------------


def test_ready_handshake_describes_the_worker(spawn):
    w = spawn()
    info = w.handshake()
    assert info == {
        "protocol": 1,
        "pid": w.proc.pid,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "package": "0.1.0",
    }


def test_protocol_fds_are_not_inheritable(worker):
    worker.call(1, "pyvisor_test_helpers", "fd_inheritable", ["PYVISOR_FD_IN"])
    worker.call(2, "pyvisor_test_helpers", "fd_inheritable", ["PYVISOR_FD_OUT"])
    assert worker.recv() == (OK, 1, False)
    assert worker.recv() == (OK, 2, False)


def test_preload_imports_modules_before_the_handshake(spawn):
    w = spawn(env={"PYVISOR_PRELOAD": " json , pyvisor_test_preload,"})
    w.handshake()
    w.call(1, "pyvisor_test_helpers", "is_loaded", ["pyvisor_test_preload"])
    assert w.recv() == (OK, 1, True)


def test_a_failing_preload_exits_1_with_its_traceback(spawn):
    w = spawn(env={"PYVISOR_PRELOAD": "json,pyvisor_no_such_module_xyz"})
    assert w.recv() is None, "no READY after a failed preload"
    assert w.wait() == 1
    err = w.err()
    assert "Traceback (most recent call last)" in err
    assert "ModuleNotFoundError" in err and "pyvisor_no_such_module_xyz" in err


@pytest.mark.parametrize("version", ["2", "0", "one"])
def test_a_protocol_mismatch_exits_4_before_the_handshake(spawn, version):
    w = spawn(env={"PYVISOR_PROTOCOL": version})
    assert w.recv() is None
    assert w.wait() == 4
    assert "protocol" in w.err()


def test_a_missing_protocol_variable_is_a_mismatch(spawn):
    w = spawn(unset=("PYVISOR_PROTOCOL",))
    assert w.recv() is None
    assert w.wait() == 4


# -- calls --------------------------------------------------------------------------------------


def test_a_call_round_trips(worker):
    worker.call(7, "math", "sqrt", [2.0])
    assert worker.recv() == (OK, 7, 2.0 ** 0.5)


def test_dotted_functions_kwargs_and_large_ids(worker):
    big_id = 2 ** 64 - 1
    worker.call(big_id, "os", "path.join", ["a", "b"])
    assert worker.recv() == (OK, big_id, os.path.join("a", "b"))
    worker.call(3, "pyvisor_test_helpers", "echo", [1, b"\x00", None], {"k": {"n": [1.5]}})
    assert worker.recv() == (OK, 3, [[1, b"\x00", None], {"k": {"n": [1.5]}}])


def test_nil_args_and_kwargs_mean_none(worker):
    # What the Rust host sends for `()` arguments.
    worker.send(CALL, 1, {"module": "pyvisor_test_helpers", "function": "echo", "args": None,
                          "kwargs": None, "session": None})
    assert worker.recv() == (OK, 1, [[], {}])


def test_calls_run_on_the_main_thread(worker):
    worker.call(1, "pyvisor_test_helpers", "on_main_thread")
    assert worker.recv() == (OK, 1, True)


def test_an_exception_comes_back_structured(worker):
    worker.call(1, "math", "sqrt", [-1.0])
    op, request_id, body = worker.recv()
    assert (op, request_id) == (ERROR, 1)
    assert body["kind"] == "exception"
    assert body["type"] == "ValueError"
    assert body["module"] == "builtins"
    assert body["message"] == "math domain error"
    assert body["traceback"].startswith("Traceback (most recent call last):")
    assert body["traceback"].rstrip().endswith("ValueError: math domain error")


def test_a_user_exception_has_its_qualname_module_and_frames(worker):
    worker.call(1, "pyvisor_test_helpers", "boom", ["kaput"])
    _, _, body = worker.recv()
    assert (body["type"], body["module"], body["message"]) == (
        "Outer.Boom", "pyvisor_test_helpers", "kaput")
    assert "pyvisor_test_helpers.py" in body["traceback"]
    assert "in boom" in body["traceback"]


def test_missing_module_and_attribute(worker):
    worker.call(1, "pyvisor_no_such_module_xyz", "f")
    _, _, body = worker.recv()
    assert (body["kind"], body["type"]) == ("exception", "ModuleNotFoundError")
    worker.call(2, "os", "path.no_such_fn")
    _, _, body = worker.recv()
    assert (body["kind"], body["type"]) == ("exception", "AttributeError")
    assert "'os'" in body["message"] and "path.no_such_fn" in body["message"]


def test_system_exit_in_user_code_is_an_error_not_an_exit(worker):
    worker.call(1, "pyvisor_test_helpers", "exit_now", [3])
    _, _, body = worker.recv()
    assert (body["kind"], body["type"]) == ("exception", "SystemExit")
    worker.call(2, "math", "sqrt", [9.0])
    assert worker.recv() == (OK, 2, 3.0)
    assert worker.proc.poll() is None


def test_results_without_a_value_form_become_refs(worker):
    worker.call(1, "pyvisor_test_helpers", "returns_set")
    assert worker.recv() == (OK, 1, {1, 2})
    worker.call(2, "pyvisor_test_helpers", "returns_nested_unencodable")
    op, request_id, body = worker.recv()
    assert (op, request_id, body[0]) == (OK, 2, 1)
    ref = body[1]["a"]
    assert isinstance(ref, HostRef) and ref.payload["type"] == "object"
    worker.call(3, "math", "sqrt", [4.0])
    assert worker.recv() == (OK, 3, 2.0)


@pytest.mark.parametrize("body", [
    "not a map",
    {"function": "sqrt", "args": []},
    {"module": "math", "args": []},
    {"module": "math", "function": "sqrt", "args": "x"},
    {"module": "math", "function": "sqrt", "args": {"x": 1}},
    {"module": "math", "function": "sqrt", "args": [], "kwargs": [1]},
    {"module": 3, "function": "sqrt", "args": []},
])
def test_a_malformed_call_is_a_bad_request(worker, body):
    worker.send(CALL, 5, body)
    op, request_id, reply = worker.recv()
    assert (op, request_id, reply["kind"]) == (ERROR, 5, "bad_request"), reply
    worker.call(6, "math", "sqrt", [1.0])
    assert worker.recv() == (OK, 6, 1.0)


@pytest.mark.parametrize("op", [0, 2, 3, 5, 13, 31, 200])
def test_an_unknown_op_is_answered_and_the_worker_stays_up(worker, op):
    worker.send(op, 11, None)
    op_back, request_id, body = worker.recv()
    assert (op_back, request_id, body["kind"]) == (ERROR, 11, "unknown_op")
    worker.call(12, "math", "sqrt", [16.0])
    assert worker.recv() == (OK, 12, 4.0)


def test_output_spam_does_not_corrupt_the_channel(worker):
    worker.call(1, "pyvisor_test_helpers", "spam", [2000])
    worker.call(2, "builtins", "print", ["x" * 100] * 500)
    worker.call(3, "math", "sqrt", [25.0])
    assert worker.recv() == (OK, 1, "done")
    assert worker.recv() == (OK, 2, None)
    assert worker.recv() == (OK, 3, 5.0)
    worker.send(SHUTDOWN, 4)
    assert worker.wait() == 0
    out, err = worker.out(), worker.err()
    assert "stdout line 1999" in out and "raw bytes on fd 1" in out
    assert "stderr line 1999" in err and "raw bytes on fd 2" in err


def test_stdout_is_line_buffered_so_the_host_sees_lines_at_once(worker):
    worker.call(1, "builtins", "print", ["a line printed by the call"])
    assert worker.recv() == (OK, 1, None)
    assert worker.proc.poll() is None
    assert "a line printed by the call\n" in worker.out()  # no exit, no flush: yet it is there


# -- ping, shutdown, end of stream --------------------------------------------------------------


def test_ping_is_answered_while_a_long_call_runs(worker):
    worker.call(1, "time", "sleep", [1.0])
    for ping_id in (2, 3, 4):
        worker.send(PING, ping_id)
    started = time.monotonic()
    # Pings queued behind the call on the interpreter thread would come after its OK.
    assert worker.recv() == (PONG, 2, None)
    assert worker.recv() == (PONG, 3, None)
    assert worker.recv() == (PONG, 4, None)
    pongs_at = time.monotonic() - started
    assert worker.recv() == (OK, 1, None)
    assert pongs_at < 0.9, f"pongs took {pongs_at:.2f}s: answered after the call?"


def test_ping_when_idle(worker):
    worker.send(PING, 99)
    assert worker.recv() == (PONG, 99, None)


def test_shutdown_finishes_the_call_in_progress_then_exits_0(worker):
    worker.call(1, "time", "sleep", [0.3])
    worker.send(SHUTDOWN, 2)
    worker.call(3, "math", "sqrt", [4.0])  # after SHUTDOWN: never read
    assert worker.recv() == (OK, 1, None)
    assert worker.recv() is None
    assert worker.wait() == 0


def test_shutdown_is_not_held_up_by_a_lingering_user_thread(worker):
    worker.call(1, "pyvisor_test_helpers", "leave_thread_running")
    assert worker.recv() == (OK, 1, True)
    worker.send(SHUTDOWN, 2)
    assert worker.wait() == 0


def test_end_of_stream_exits_0(worker):
    worker.close_input()
    assert worker.recv() is None
    assert worker.wait() == 0


def test_end_of_stream_during_a_stuck_call_exits_via_the_watchdog(worker):
    worker.call(1, "time", "sleep", [600])
    worker.send(PING, 2)
    assert worker.recv() == (PONG, 2, None)  # the call is running by now, or about to
    started = time.monotonic()
    worker.close_input()
    assert worker.wait() == 0
    assert time.monotonic() - started < 10


# -- frame limits and protocol violations -------------------------------------------------------


def test_an_oversize_frame_from_the_host_exits_3(spawn):
    w = spawn(env={"PYVISOR_MAX_FRAME": "1024"})
    w.handshake()
    w.send_raw(struct.pack(">I", 1025))  # the payload is never needed
    assert w.wait() == 3
    assert "1025" in w.err()


@pytest.mark.parametrize("payload", [
    b"\xc1",  # never-used MessagePack byte
    msgpack.packb({"op": 1}),  # not an envelope
    msgpack.packb([1, 2]),  # too short
    msgpack.packb([1, -1, None]),  # negative id
    msgpack.packb([1, 2, None]) + b"\x00",  # trailing bytes
    b"",
])
def test_a_garbage_frame_from_the_host_exits_3(worker, payload):
    worker.send_raw(struct.pack(">I", len(payload)) + payload)
    assert worker.wait() == 3
    assert "protocol violation" in worker.err()


def test_a_truncated_frame_exits_3(worker):
    worker.send_raw(struct.pack(">I", 100) + b"\x93\x01")
    worker.close_input()
    assert worker.wait() == 3


def test_a_result_above_the_frame_limit_is_an_error_and_the_worker_keeps_serving(spawn):
    w = spawn(env={"PYVISOR_MAX_FRAME": "4096"})
    w.handshake()
    # payload = 0x93, op, id (1 byte each) + str8/16 header (3 bytes) + the string
    w.call(1, "pyvisor_test_helpers", "big_string", [4096 - 6])
    assert w.recv() == (OK, 1, "x" * (4096 - 6))
    w.call(2, "pyvisor_test_helpers", "big_string", [4096 - 5])
    op, request_id, body = w.recv()
    assert (op, request_id) == (ERROR, 2)
    assert (body["kind"], body["type"], body["module"]) == ("frame_too_large", "str", "builtins")
    w.call(3, "operator", "mul", ["y", 100000])
    assert w.recv()[2]["kind"] == "frame_too_large"
    w.call(4, "math", "sqrt", [4.0])
    assert w.recv() == (OK, 4, 2.0)


def test_an_error_larger_than_the_frame_limit_is_truncated(spawn):
    w = spawn(env={"PYVISOR_MAX_FRAME": "4096"})
    w.handshake()
    w.call(1, "pyvisor_test_helpers", "boom_big", [100000])
    op, request_id, body = w.recv()
    assert (op, request_id, body["kind"], body["type"]) == (ERROR, 1, "exception", "Outer.Boom")
    assert body["message"].startswith("zzz") and len(body["message"]) < 4096
    w.call(2, "math", "sqrt", [4.0])
    assert w.recv() == (OK, 2, 2.0)


# -- object bridge ------------------------------------------------------------------------------

H = "pyvisor_test_helpers"


def call_body(module, function, args=(), kwargs=None, session=None):
    return {"module": module, "function": function, "args": list(args), "kwargs": kwargs,
            "session": session}


def test_a_pattern_ref_then_call_method_and_get_attr(worker):
    ref = worker.request(CALL, 1, call_body("re", "compile", ["a(b+)c"], session="s1"))
    assert isinstance(ref, HostRef) and not ref.stream
    assert ref.payload == {"id": ref.id, "session": "s1", "pool": "test", "slot": 0,
                           "generation": 1, "type": "Pattern", "module": "re"}
    match = worker.request(CALL_METHOD, 2, {"target": ref, "method": "match", "args": ["abbbc"],
                                            "kwargs": None, "session": "s1"})
    assert isinstance(match, HostRef) and match.payload["type"] == "Match"
    assert match.id != ref.id
    assert worker.request(CALL_METHOD, 3, {"target": match, "method": "group", "args": [1],
                                           "kwargs": {}, "session": "s1"}) == "bbb"
    assert worker.request(GET_ATTR, 4, {"target": ref, "name": "pattern",
                                        "session": "s1"}) == "a(b+)c"
    # Refs inside the arguments of a plain CALL are the live object.
    assert worker.request(CALL, 5, call_body("operator", "is_",
                                             [ref, HostRef(EXT_REF, dict(ref.payload))],
                                             session="s1")) is True
    assert worker.request(CALL, 6, call_body("operator", "is_", [ref, match],
                                             session="s1")) is False


def test_set_attr_on_a_ref(worker):
    box = worker.request(CALL, 1, call_body(H, "Box", [1]))
    assert worker.request(SET_ATTR, 2, {"target": box, "name": "content",
                                        "value": {"k": [1, 2]}, "session": None}) is None
    assert worker.request(CALL_METHOD, 3, {"target": box, "method": "get", "args": None,
                                           "kwargs": None, "session": None}) == {"k": [1, 2]}


def test_get_attr_of_a_module(worker):
    import math

    assert worker.request(GET_ATTR, 1, {"target": "math", "name": "pi",
                                        "session": None}) == math.pi
    err = worker.failing(GET_ATTR, 2, {"target": "math", "name": "nope", "session": None},
                         "exception")
    assert err["type"] == "AttributeError"


def test_eval_with_a_ref_in_its_globals(spawn):
    w = spawn(env={"PYVISOR_ALLOW_EVAL": "1"})
    w.handshake()
    ref = w.request(CALL, 1, call_body("re", "compile", ["x+y"]))
    assert w.request(CALL, 2, call_body(
        "builtins", "eval", ["p.fullmatch('xxy').group(0)", {"p": ref}])) == "xxy"


def test_eval_is_not_allowed_by_default(worker):
    err = worker.failing(CALL, 1, call_body("builtins", "eval", ["1 + 1"]), "not_allowed")
    assert "builtins.eval" in err["message"] and "PYVISOR_ALLOW_EVAL" in err["message"]
    worker.failing(CALL, 2, call_body("builtins", "exec", ["x = 1"]), "not_allowed")
    assert worker.request(CALL, 3, call_body("builtins", "len", [[1, 2]])) == 2


def test_the_module_allowlist(spawn):
    w = spawn(env={"PYVISOR_ALLOW_MODULES": f"math,os.path,{H}", "PYVISOR_ALLOW_EVAL": "1"})
    w.handshake()
    assert w.request(CALL, 1, call_body("math", "sqrt", [9.0])) == 3.0
    assert w.request(CALL, 2, call_body("os.path", "join", ["a", "b"])) == "a/b"
    err = w.failing(CALL, 3, call_body("os", "getcwd"), "not_allowed")
    assert "'os'" in err["message"] and "PYVISOR_ALLOW_MODULES" in err["message"]
    w.failing(CALL, 4, call_body("builtins", "eval", ["1"]), "not_allowed")
    w.failing(GET_ATTR, 5, {"target": "json", "name": "dumps", "session": None}, "not_allowed")
    w.failing(CONTEXT, 6, {"session": "s", "module": "decimal", "function": "localcontext",
                           "args": None, "kwargs": None}, "not_allowed")
    assert w.request(CALL, 7, call_body(H, "is_loaded", ["json.decoder"])) in (True, False)


def test_stream_next_in_batches_until_done(worker):
    result = worker.request(CALL, 1, call_body(H, "stream_in_a_dict", [5], session="s"))
    assert result["status"] == "ok"
    stream = result["stream"]
    assert isinstance(stream, HostRef) and stream.stream
    assert stream.payload["type"] == "generator"
    batches = []
    for request_id in range(2, 10):
        batch = worker.request(STREAM_NEXT, request_id, {"target": stream, "max": 2,
                                                         "session": "s"})
        batches.append(batch)
        if batch["done"]:
            break
    assert batches == [{"items": [0, 1], "done": False}, {"items": [2, 3], "done": False},
                       {"items": [4], "done": True}]
    err = worker.failing(STREAM_NEXT, 20, {"target": stream, "max": 2, "session": "s"},
                         "ref_not_found")
    assert str(stream.id) in err["message"]


def test_contexts_keep_each_sessions_settings(worker):
    for request_id, (session, setting) in enumerate((("s1", "one"), ("s2", "two")), 1):
        assert worker.request(CONTEXT, request_id, {
            "session": session, "module": H, "function": "setting", "args": [setting],
            "kwargs": None}) is None
    # Interleaved on one worker: each request runs inside its own session's context.
    assert worker.request(CALL, 3, call_body(H, "get_setting", session="s1")) == "one"
    assert worker.request(CALL, 4, call_body(H, "get_setting", session="s2")) == "two"
    assert worker.request(CALL, 5, call_body(H, "get_setting")) == "default"
    assert worker.request(CALL, 6, call_body(H, "get_setting", session="s1")) == "one"
    assert worker.request(CONTEXT, 7, {"session": "s1", "module": None, "function": None,
                                       "args": None, "kwargs": None}) is None
    assert worker.request(CALL, 8, call_body(H, "get_setting", session="s1")) == "default"
    assert worker.request(CALL, 9, call_body(H, "get_setting", session="s2")) == "two"
    err = worker.failing(CONTEXT, 10, {"session": "s1", "module": H,
                                       "function": "broken_context"}, "exception")
    assert err["message"] == "cannot enter"
    assert worker.request(CALL, 11, call_body(H, "get_setting", session="s1")) == "default"


def test_release_then_use_is_ref_not_found(worker):
    refs = [worker.request(CALL, i, call_body(H, "Box", [i], session="s")) for i in (1, 2, 3)]
    assert worker.request(RELEASE, 4, {"session": "s", "refs": [refs[0].id, 999999]}) == 1
    err = worker.failing(CALL_METHOD, 5, {"target": refs[0], "method": "get", "session": "s"},
                         "ref_not_found")
    assert str(refs[0].id) in err["message"]
    assert worker.request(CALL_METHOD, 6, {"target": refs[1], "method": "get",
                                           "session": "s"}) == 2
    assert worker.request(RELEASE, 7, {"session": "s", "refs": None}) == 2
    worker.failing(GET_ATTR, 8, {"target": refs[2], "name": "content", "session": "s"},
                   "ref_not_found")


def test_a_ref_of_another_session_is_refused(worker):
    ref = worker.request(CALL, 1, call_body(H, "Box", ["mine"], session="a"))
    err = worker.failing(GET_ATTR, 2, {"target": ref, "name": "content", "session": "b"},
                         "ref_session_mismatch")
    assert str(ref.id) in err["message"]
    worker.failing(CALL, 3, call_body(H, "echo", [ref]), "ref_session_mismatch")
    assert worker.request(GET_ATTR, 4, {"target": ref, "name": "content",
                                        "session": "a"}) == "mine"


def test_the_same_object_twice_is_one_ref(worker):
    result = worker.request(CALL, 1, call_body(H, "same_twice"))
    assert result[0].id == result[1]["again"].id


def test_max_refs_evicts_the_least_recently_used(spawn):
    w = spawn(env={"PYVISOR_MAX_REFS": "2"})
    w.handshake()
    first, second = (w.request(CALL, i, call_body(H, "Box", [i])) for i in (1, 2))
    assert w.request(GET_ATTR, 3, {"target": first, "name": "content", "session": None}) == 1
    w.request(CALL, 4, call_body(H, "Box", [4]))  # evicts `second`, used less recently
    w.failing(GET_ATTR, 5, {"target": second, "name": "content", "session": None},
              "ref_not_found")
    assert w.request(GET_ATTR, 6, {"target": first, "name": "content", "session": None}) == 1


def test_a_bad_value_in_a_body_is_a_bad_request_and_the_worker_stays_up(worker):
    bad = msgpack.ExtType(42, b"?")
    worker.failing(CALL, 1, call_body("math", "sqrt", [bad]), "bad_request")
    worker.failing(CALL, 2, call_body("math", "sqrt", [msgpack.ExtType(4, b"12x")]),
                   "bad_request")
    assert worker.request(CALL, 3, call_body("math", "sqrt", [4.0])) == 2.0


def test_bodies_are_decoded_in_order_on_the_interpreter_thread(worker):
    # Pipelined: the second request names the ref the first one is about to create (ids count
    # from 1 in a fresh worker). Decoded on arrival, it would not exist yet.
    guessed = HostRef(EXT_REF, {"id": 1, "session": "s", "pool": "test", "slot": 0,
                                "generation": 1, "type": "Box", "module": H})
    worker.call(1, "time", "sleep", [0.2])
    worker.call(2, H, "Box", ["early"], session="s")
    worker.send(GET_ATTR, 3, {"target": guessed, "name": "content", "session": "s"})
    worker.send(PING, 4)
    replies = {}
    for _ in range(4):
        op, request_id, body = worker.recv()
        replies[request_id] = (op, body)
    assert replies[4] == (PONG, None)
    assert replies[1] == (OK, None)
    assert replies[2][0] == OK and replies[2][1].id == 1
    assert replies[3] == (OK, "early")


def test_numpy_arrays_cross_the_pipe(worker):
    import numpy as np

    arr = worker.request(CALL, 1, call_body("numpy", "arange", [6.0]))
    assert isinstance(arr, msgpack.ExtType) and arr.code == 9
    dtype, shape, data = msgpack.unpackb(arr.data)
    assert (dtype, shape) == ("<f8", [6])
    assert np.frombuffer(data, dtype=dtype).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    total = worker.request(CALL, 2, call_body("numpy", "sum", [arr]))
    assert total == 15.0


def test_refs_size_reports_the_workers_registry(worker):
    assert worker.request(CALL, 1, call_body("pyvisor_worker.refs", "size")) == 0
    worker.request(CALL, 2, call_body(H, "Box"))
    worker.request(CALL, 3, call_body(H, "same_twice"))
    assert worker.request(CALL, 4, call_body("pyvisor_worker.refs", "size")) == 2


def test_a_failing_stream_sends_its_items_then_the_error(worker):
    stream = worker.request(CALL, 1, call_body(H, "count_then_fail", [3]))
    assert worker.request(STREAM_NEXT, 2, {"target": stream, "max": 64, "session": None}) == {
        "items": [0, 1, 2], "done": False}
    err = worker.failing(STREAM_NEXT, 3, {"target": stream, "max": 64, "session": None},
                         "exception")
    assert err["message"] == "failed after 3"
