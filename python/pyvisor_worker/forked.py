"""Forking one worker from the template (``docs/protocol.md``, "Template process").

``fork()`` clones the template with ``clone.clone_parent()``, so the worker is a child of the
host. The template cannot ``setpgid()`` a process that is not its child, so the child sets itself
up and reports over a handshake pipe created before the clone: it moves into a process group of
its own, sets ``PR_SET_PDEATHSIG(SIGKILL)`` (the parent is the host), checks that its parent is
still the host, then writes one byte. The template answers ``forked`` only after that byte, so the
host never learns a pid whose process group does not exist yet.

The child then becomes a worker: it keeps stdin, its stdout/stderr (moved onto 1 and 2) and its
two protocol descriptors, points every other descriptor it inherited at ``/dev/null``
(``clone.detach_fds_except``), reseeds the random generators the fork hooks miss, and runs
``worker.main()``. It never returns into the template's code: every way out ends in
``os._exit()``.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import NoReturn, Optional

from . import clone, worker
from .protocol import EXIT_FAILURE
from .stdio import flush_stdio

__all__ = ["Setup", "ForkFailed", "fork", "reseed"]


@dataclass(frozen=True)
class Setup:
    """What the new worker gets: its descriptors (open in the template) and its identity."""

    fd_in: int
    """Request pipe, read end: becomes ``PYVISOR_FD_IN``."""
    fd_out: int
    """Reply pipe, write end: becomes ``PYVISOR_FD_OUT``."""
    stdout: int
    """Write end the worker's stdout (fd 1) is moved to."""
    stderr: int
    """Write end the worker's stderr (fd 2) is moved to."""
    slot: int
    generation: int
    host_pid: int


class ForkFailed(Exception):
    """No worker: ``pid`` is set when a process was created (and has exited: the host reaps it)."""

    def __init__(self, message: str, pid: Optional[int] = None) -> None:
        super().__init__(message)
        self.pid = pid


def fork(setup: Setup, channel: socket.socket) -> int:
    """Create the worker and return its pid once its process group exists.

    ``channel`` is the template's socket (the child closes its copy). The caller still owns and
    closes the template's copies of the descriptors in ``setup``. Raises ``ForkFailed``.
    """
    template = os.getpid()
    try:
        ready_r, ready_w = os.pipe()
    except OSError as exc:
        raise ForkFailed(f"cannot create the handshake pipe: {exc}") from None
    try:
        try:
            pid = clone.clone_parent()
            if pid == 0:
                _child(setup, channel, ready_r, ready_w)
        except BaseException:
            if os.getpid() != template:  # an exception in the child: never back into the loop
                os._exit(EXIT_FAILURE)
            raise
    except OSError as exc:
        os.close(ready_r)
        os.close(ready_w)
        raise ForkFailed(str(exc)) from None
    os.close(ready_w)
    try:
        byte = os.read(ready_r, 1)
    except OSError as exc:  # pragma: no cover - a pipe read end does not fail
        raise ForkFailed(f"reading the handshake pipe failed: {exc}", pid) from None
    finally:
        os.close(ready_r)
    if not byte:
        raise ForkFailed("the worker died during setup", pid)
    return pid


def _child(setup: Setup, channel: socket.socket, ready_r: int, ready_w: int) -> NoReturn:
    """The clone: set up, run the worker, exit. Never returns."""
    status = EXIT_FAILURE
    try:
        os.close(ready_r)
        os.setpgid(0, 0)
        clone.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != setup.host_pid:  # the host died before prctl: nobody would kill us
            os._exit(EXIT_FAILURE)
        os.write(ready_w, b"\x01")
        os.close(ready_w)
        status = _run_worker(setup, channel)
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:
        traceback.print_exc()
        status = EXIT_FAILURE
    finally:
        try:
            _finish(status)
        finally:
            os._exit(status)


def _run_worker(setup: Setup, channel: socket.socket) -> int:
    channel.close()
    for source, target in ((setup.stdout, 1), (setup.stderr, 2)):
        os.dup2(source, target)  # inheritable: the worker's subprocesses share its stdout/stderr
    for source in {setup.stdout, setup.stderr} - {0, 1, 2}:
        os.close(source)
    clone.detach_fds_except((0, 1, 2, setup.fd_in, setup.fd_out))
    os.environ.update(
        PYVISOR_FD_IN=str(setup.fd_in),
        PYVISOR_FD_OUT=str(setup.fd_out),
        PYVISOR_SLOT=str(setup.slot),
        PYVISOR_GENERATION=str(setup.generation),
    )
    reseed()
    return worker.main()


def reseed() -> None:
    """Reseed the random generators whose state the clone copied and no fork hook resets.

    ``random`` reseeds itself in its ``os.register_at_fork`` hook. ``numpy.random``'s legacy
    global ``RandomState`` does not (only when ``numpy.random`` is loaded: numpy imports it
    lazily, and a fresh import seeds itself); OpenSSL reseeds in a ``pthread_atfork`` handler,
    which does not run for a raw clone, so it gets fresh entropy here.
    """
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()
    ssl = sys.modules.get("ssl")
    if ssl is not None:
        ssl.RAND_add(os.urandom(32), 32.0)


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:
        pass
    return EXIT_FAILURE


def _finish(status: int) -> None:
    """What interpreter shutdown does: wait for non-daemon threads (bounded, like
    ``python -m pyvisor_worker``), run ``atexit`` handlers, flush stdout and stderr."""
    guard = threading.Timer(worker.WATCHDOG_SECONDS, os._exit, args=(status,))
    guard.daemon = True
    guard.start()
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        try:
            shutdown()
        except Exception:
            traceback.print_exc()
    atexit._run_exitfuncs()
    flush_stdio()
