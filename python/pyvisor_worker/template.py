"""The template process: imports a preload list once, then forks workers on request.

Run by the host as ``python -m pyvisor_worker.template`` (``docs/protocol.md``, "Template
process"). It talks to the host over the connected ``AF_UNIX`` datagram socket in
``PYVISOR_TEMPLATE_FD``, one MessagePack map per datagram. Each ``fork`` request carries the new
worker's four descriptors; the template clones itself with ``clone.clone_parent()`` (the worker
becomes the **host's** child) and the child runs ``worker.main()`` on them, exactly like a
spawned worker (``forked.py``).

Startup order: host and protocol checks, platform check, imports (the worker's modules and the
preload list), ``gc.freeze()``, thread check, then the ``ready`` datagram.
"""

from __future__ import annotations

import gc
import os
import platform
import socket
import sys
import traceback
from typing import Any, Dict, List, Sequence, Tuple

import msgpack

from . import clone, forked, worker
from .protocol import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .worker import _StartupError

__all__ = ["main", "serve", "handle", "EXPECTED_FDS"]

EXPECTED_FDS = 4
"""A ``fork`` request carries: request read end, reply write end, stdout and stderr write ends."""

_MAX_DATAGRAM = 65536
_MAX_FDS = 8


def _say(message: str) -> None:
    """One line for the host's stderr capture."""
    try:
        sys.stderr.write(f"pyvisor template: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def _env_int(name: str) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw) if raw is not None else -1
    except ValueError:
        return -1


def _check_host() -> int:
    """The host's pid; the template must be its direct child (``PYVISOR_HOST_PID``)."""
    host_pid = _env_int("PYVISOR_HOST_PID")
    if host_pid <= 0:
        raise _StartupError(
            f"PYVISOR_HOST_PID={os.environ.get('PYVISOR_HOST_PID')!r} is not a pid", EXIT_USAGE
        )
    parent = os.getppid()
    if parent != host_pid:
        raise _StartupError(
            f"the parent process is {parent}, not the host PYVISOR_HOST_PID={host_pid}: forked "
            "workers would not be the host's children",
            EXIT_USAGE,
        )
    return host_pid


def _open_socket() -> socket.socket:
    """The host channel from ``PYVISOR_TEMPLATE_FD``, made non-inheritable."""
    fd = _env_int("PYVISOR_TEMPLATE_FD")
    if fd < 0:
        raise _StartupError(
            f"PYVISOR_TEMPLATE_FD={os.environ.get('PYVISOR_TEMPLATE_FD')!r} is not a file "
            "descriptor",
            EXIT_USAGE,
        )
    try:
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        sock.setblocking(True)
    except OSError as exc:
        raise _StartupError(f"PYVISOR_TEMPLATE_FD={fd} is not a usable socket: {exc}",
                            EXIT_USAGE) from None
    if sock.family != socket.AF_UNIX:
        raise _StartupError(f"PYVISOR_TEMPLATE_FD={fd} is not an AF_UNIX socket", EXIT_USAGE)
    return sock


def _check_platform() -> None:
    reason = clone.unsupported_reason()
    if reason is not None:
        raise _StartupError(reason, EXIT_USAGE)


def _import_worker_modules() -> None:
    """Import every module a worker imports, so that forked workers import nothing at start."""
    import atexit  # noqa: F401 - forked.py ends the worker with atexit._run_exitfuncs()
    import select  # noqa: F401 - worker._start_group_reaper
    import signal  # noqa: F401 - worker._start_group_reaper

    from . import calls, ops, policy, protocol, refs, value  # noqa: F401

    clone._lib()  # loads ctypes' view of libc and the fork hooks once, here


def _os_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _check_threads(preloaded: Sequence[str]) -> None:
    """Refuse to serve when a preloaded module started threads: forking them is unsafe."""
    count = _os_threads()
    if count <= 1:
        return
    import threading

    names = ", ".join(t.name for t in threading.enumerate())
    raise _StartupError(
        f"preloading {', '.join(preloaded) or '(nothing)'} started threads ({names}, {count} OS "
        "threads); forking a process with threads is unsafe",
        EXIT_USAGE,
    )


def _start() -> Tuple[socket.socket, int, List[str]]:
    """Run the startup checks and imports; returns ``(socket, host pid, preloaded names)``."""
    host_pid = _check_host()
    worker._check_protocol()
    _check_platform()
    sock = _open_socket()
    _import_worker_modules()
    preloaded = worker.import_preload("PYVISOR_TEMPLATE_PRELOAD", _say)
    gc.collect()
    gc.freeze()  # forked workers' collections then never touch (and copy) the template's objects
    _check_threads(preloaded)
    return sock, host_pid, preloaded


def _ready(preloaded: List[str]) -> Dict[str, Any]:
    return {
        "op": "ready",
        "pid": os.getpid(),
        "python": platform.python_version(),
        "preloaded": list(preloaded),
    }


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _failed(request_id: int, error: str) -> Dict[str, Any]:
    return {"op": "fork_failed", "id": request_id, "error": error}


def _parse(message: bytes) -> Dict[str, Any]:
    """The request map; raises ``ValueError`` with the reason when it is not one."""
    try:
        request = msgpack.unpackb(message, raw=False)
    except Exception as exc:
        raise ValueError(f"the request is not MessagePack: {exc}") from None
    if not isinstance(request, dict):
        raise ValueError(f"the request is a {type(request).__name__}, not a map")
    return request


def _request_id(request: Dict[str, Any]) -> int:
    request_id = request.get("id")
    if isinstance(request_id, int) and not isinstance(request_id, bool) and request_id >= 0:
        return request_id
    return 0


def handle(message: bytes, fds: List[int], sock: socket.socket, host_pid: int) -> Dict[str, Any]:
    """Answer one request datagram; ``fds`` (its descriptors) are closed here in every case.

    In a forked child this never returns: the child becomes the worker and exits.
    """
    try:
        try:
            request = _parse(message)
        except ValueError as exc:
            return _failed(0, str(exc))
        request_id = _request_id(request)
        op = request.get("op")
        if op != "fork":
            return _failed(request_id, f"unknown op {op!r}")
        if request_id != request.get("id"):
            return _failed(request_id, f"bad id {request.get('id')!r}")
        for key in ("slot", "generation"):
            if not isinstance(request.get(key), int) or isinstance(request.get(key), bool):
                return _failed(request_id, f"bad {key} {request.get(key)!r}")
        if len(fds) != EXPECTED_FDS:
            return _failed(
                request_id,
                f"a fork request carries {EXPECTED_FDS} descriptors (request, reply, stdout, "
                f"stderr), this one carried {len(fds)}",
            )
        setup = forked.Setup(
            fd_in=fds[0], fd_out=fds[1], stdout=fds[2], stderr=fds[3],
            slot=request["slot"], generation=request["generation"], host_pid=host_pid,
        )
        try:
            pid = forked.fork(setup, sock)
        except forked.ForkFailed as exc:
            reply = _failed(request_id, str(exc))
            if exc.pid is not None:
                reply["pid"] = exc.pid
            return reply
        except Exception as exc:  # a bug here: report it, keep serving
            _say("fork failed unexpectedly")
            traceback.print_exc()
            return _failed(request_id, f"template error: {exc!r}")
        return {"op": "forked", "id": request_id, "pid": pid}
    finally:
        _close_all(fds)


def serve(sock: socket.socket, host_pid: int) -> int:
    """Answer requests one at a time, in order, until the host closes the channel."""
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(
                sock, _MAX_DATAGRAM, _MAX_FDS, socket.MSG_CMSG_CLOEXEC
            )
        except OSError:
            return EXIT_OK
        if not message:
            _close_all(fds)
            return EXIT_OK  # end of stream (SOCK_SEQPACKET) or the host's empty "stop" datagram
        reply = handle(message, fds, sock, host_pid)
        try:
            sock.send(msgpack.packb(reply))
        except OSError:
            return EXIT_OK  # the host is gone (ECONNREFUSED on a datagram socket)


def main() -> int:
    """Run the template; the return value is the process exit status."""
    try:
        sock, host_pid, preloaded = _start()
    except _StartupError as exc:
        if exc.status != EXIT_FAILURE:  # a failed preload has already told its story
            _say(str(exc))
        return exc.status
    try:
        sock.send(msgpack.packb(_ready(preloaded)))
    except OSError:
        return EXIT_OK
    return serve(sock, host_pid)


def _exit(status: int) -> None:
    """Leave without interpreter shutdown: it would wait for threads a bad preload started."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


if __name__ == "__main__":
    _exit(main())
