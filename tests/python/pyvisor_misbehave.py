"""A worker that misbehaves on purpose (tests/reliability_misbehaving_worker.rs, issue 5).

The functions here are ordinary user code called through the public API, but they reach for the
protocol channel behind the worker's back: ``PYVISOR_FD_OUT`` is the fd the worker writes its
replies to. Every frame forged here is written with one ``os.write`` of fewer than ``PIPE_BUF``
bytes, which POSIX makes atomic on a pipe, so a forged frame never interleaves with a ``PONG`` the
watch thread writes at the same moment: the host sees exactly the misbehaviour under test.

After breaking the channel most functions *block* instead of returning, so that what ends them is
the host killing the process, not the function finishing. Blocking is bounded (``BLOCK_SECONDS``)
so that a broken host cannot leave a process behind forever.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import time
from typing import Any, List

import msgpack

BLOCK_SECONDS = 300.0
"""Upper bound of every "block forever" here; the host is expected to kill long before."""

OK = 2
"""The ``OK`` op of docs/protocol.md."""

_counter = 0


def _fd_out() -> int:
    return int(os.environ["PYVISOR_FD_OUT"])


def _max_frame() -> int:
    return int(os.environ["PYVISOR_MAX_FRAME"])


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _write_atomically(data: bytes) -> None:
    assert len(data) <= 4096, "a forged frame must fit PIPE_BUF to stay atomic"
    written = os.write(_fd_out(), data)
    assert written == len(data)


def _block() -> None:
    end = time.monotonic() + BLOCK_SECONDS
    while time.monotonic() < end:
        time.sleep(0.05)


def _current_request_id() -> int:
    """The id of the request being served: a local of the worker's interpreter loop (``serve.serve``)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "serve" and "request_id" in frame.f_locals:
            return int(frame.f_locals["request_id"])
        frame = frame.f_back
    raise RuntimeError("not running inside the pyvisor worker's interpreter loop")


# ----- misbehaviours --------------------------------------------------------------------------


def write_garbage() -> None:
    """A frame with a valid length whose payload is not a MessagePack ``[op, id, body]``."""
    _write_atomically(_frame(b"GARBAGE!"))
    _block()


def announce_oversize_frame() -> None:
    """A length prefix one byte above the frame limit (the payload never follows)."""
    _write_atomically(struct.pack(">I", _max_frame() + 1))
    _block()


def answer_unknown_id() -> None:
    """A well-formed ``OK`` frame for a request id the host never used (ids start at 1 and grow
    by one per request, so 2**62 cannot be current)."""
    _write_atomically(_frame(msgpack.packb([OK, 2**62, "forged"])))
    _block()


def answer_twice(real: str, forged: str) -> str:
    """Writes a forged ``OK`` for the current request, then returns normally: the worker then
    sends its own ``OK`` for the same id, a second answer."""
    request_id = _current_request_id()
    _write_atomically(_frame(msgpack.packb([OK, request_id, forged])))
    return real


def current_request_id() -> int:
    """The id of this very request (to show the stack walk above works)."""
    return _current_request_id()


def close_reply_channel() -> None:
    """Closes the reply pipe but keeps the process running."""
    os.close(_fd_out())
    _block()


def ignore_sigterm() -> int:
    """From now on SIGTERM does nothing to this worker; returns the pid."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return os.getpid()


def leak_then_block(megabytes: int, marker: str) -> None:
    """Allocates and touches ``megabytes`` MiB that stay referenced, writes ``marker``, then blocks
    in Python (GIL released: heartbeats keep being answered)."""
    hoard: List[bytearray] = []
    for _ in range(megabytes):
        chunk = bytearray(1 << 20)
        chunk[::4096] = b"\x01" * len(chunk[::4096])  # touch every page: resident, not just mapped
        hoard.append(chunk)
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    _block()


def hang_in_c_holding_the_gil(marker: str) -> None:
    """Writes ``marker``, then calls ``pause(2)`` through ``ctypes.PyDLL``, which does not release
    the GIL: the watch thread can no longer answer pings."""
    import ctypes

    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    ctypes.PyDLL(None).pause()


# ----- helpers for the bad-input and security tests -------------------------------------------


def incr() -> List[int]:
    """Increments this process's counter; returns ``[new value, pid]``. The read-modify-write
    yields the GIL in between, so two calls running at once would lose an update."""
    global _counter
    seen = _counter
    time.sleep(0.001)
    _counter = seen + 1
    return [_counter, os.getpid()]


def counter() -> int:
    return _counter


def fd_links() -> List[List[Any]]:
    """``[fd, readlink target]`` of every fd this process holds."""
    out = []
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            out.append([int(name), os.readlink(f"/proc/self/fd/{name}")])
        except OSError:
            pass  # the fd of the listdir itself, already closed
    return out


def child_fd_links() -> List[List[Any]]:
    """The fds a process spawned by this worker inherits (``close_fds=False``: every inheritable
    fd passes), as ``[fd, readlink target]``."""
    import json
    import subprocess

    code = (
        "import json, os\n"
        "out = []\n"
        "for n in os.listdir('/proc/self/fd'):\n"
        "    try: out.append([int(n), os.readlink('/proc/self/fd/' + n)])\n"
        "    except OSError: pass\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], close_fds=False, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def protocol_fds() -> List[int]:
    return [int(os.environ["PYVISOR_FD_IN"]), int(os.environ["PYVISOR_FD_OUT"])]


# ----- deep values --------------------------------------------------------------------------


def nested_tuples(depth: int) -> Any:
    """A tuple nested ``depth`` levels deep, returned through the worker's normal encoder. Python
    refuses to encode nesting beyond its recursion limit (the result then becomes one ref), so
    this raises the limit first, as user code may."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), depth + 1000))
    value: Any = None
    for _ in range(depth):
        value = (value,)
    return value


def forge_nested_tuples(depth: int) -> None:
    """Answers the current request with ``depth`` nested TUPLE ext values (each an ext 32 whose
    payload is a one-element array), written through the worker's own frame writer so that it
    does not interleave with a PONG; then blocks. About 7 bytes per level."""
    inner = b"\xc0"
    for _ in range(depth):
        payload = b"\x91" + inner
        inner = b"\xc9" + struct.pack(">I", len(payload)) + b"\x01" + payload
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_name != "serve":
        frame = frame.f_back
    assert frame is not None, "not inside the worker's interpreter loop"
    frame.f_locals["writer"].send(OK, int(frame.f_locals["request_id"]), inner)
    _block()


# ----- routing model (tests/reliability_proptest.rs) ------------------------------------------

_kv: dict = {}


def swap(key: str, value: int) -> List[Any]:
    """Stores ``value`` under ``key`` in this process; returns ``[pid, previous value or None]``."""
    old = _kv.get(key)
    _kv[key] = value
    return [os.getpid(), old]
