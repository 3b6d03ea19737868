"""The worker process: environment checks, preload, the handshake, then ``serve``.

``main()`` runs on the process's main thread, which is the **interpreter thread**: it runs every
request, one at a time, in arrival order (``serve.py``: it reads requests itself while idle, and a
watch thread covers the channel while a call runs). Request bodies are decoded on the interpreter
thread (``ops.Ops``), where refs are resolved in order.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional

from . import __version__, refs, value
from .ops import Ops
from .policy import Policy
from .protocol import (
    DEFAULT_MAX_FRAME,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_VERSION,
    PROTOCOL_VERSION,
    READY,
    FrameWriter,
)
from .serve import WATCHDOG_SECONDS, Channel, serve
from .serve import say as _say
from .stdio import flush_stdio

__all__ = ["main", "WATCHDOG_SECONDS"]


class _StartupError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _env_fd(name: str) -> int:
    raw = os.environ.get(name)
    if raw is None:
        raise _StartupError(f"{name} is not set", EXIT_USAGE)
    try:
        fd = int(raw)
    except ValueError:
        raise _StartupError(f"{name}={raw!r} is not a file descriptor", EXIT_USAGE) from None
    if fd < 0:
        raise _StartupError(f"{name}={raw!r} is not a file descriptor", EXIT_USAGE)
    return fd


def _check_protocol() -> None:
    raw = os.environ.get("PYVISOR_PROTOCOL")
    try:
        host = int(raw) if raw is not None else None
    except ValueError:
        host = None
    if host != PROTOCOL_VERSION:
        raise _StartupError(
            f"protocol version mismatch: the host speaks PYVISOR_PROTOCOL={raw!r}, "
            f"this worker (pyvisor-worker {__version__}) speaks {PROTOCOL_VERSION}",
            EXIT_VERSION,
        )


def _max_frame() -> int:
    raw = os.environ.get("PYVISOR_MAX_FRAME")
    if raw is None or not raw.strip():
        return DEFAULT_MAX_FRAME
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit <= 0:
        raise _StartupError(f"PYVISOR_MAX_FRAME={raw!r} is not a positive integer", EXIT_USAGE)
    return limit


def _start_group_reaper(fd_in: int) -> None:
    """Forks a process that SIGKILLs this worker's process group once the host is gone.

    The host kills the group (forked grandchildren included) whenever it is alive to do so; a
    SIGKILLed host cannot, and PR_SET_PDEATHSIG only takes the worker itself along. The reaper
    waits for the request pipe to hang up (its only writer is the host) and kills the group.
    Forked before any thread exists.
    """
    import select
    import signal

    group = os.getpgid(0)
    if group != os.getpid():
        return  # not started by a host in a group of its own (e.g. run in-process by a test)
    try:
        pid = os.fork()
    except OSError:
        return
    if pid != 0:
        return
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, fd_in)
        os.closerange(fd_in + 1, 1 << 16)
        poller = select.poll()
        poller.register(fd_in, 0)  # POLLHUP and POLLERR are always reported
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in events):
                break
        os.killpg(group, signal.SIGKILL)
    finally:
        os._exit(0)


def import_preload(
    variable: str = "PYVISOR_PRELOAD", say: Optional[Callable[[str], None]] = None
) -> List[str]:
    """Import the comma-separated modules named by the environment variable ``variable``.

    Returns the names imported. A failing import prints its traceback to stderr after a one-line
    message (through ``say``, the worker's by default) and raises ``_StartupError`` with
    ``EXIT_FAILURE``. The template (``template.py``) shares this with the worker.
    """
    report = _say if say is None else say
    names = [n.strip() for n in os.environ.get(variable, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except KeyboardInterrupt:
            raise
        except BaseException:
            report(f"{variable}: importing {name!r} failed")
            traceback.print_exc()
            raise _StartupError(f"preload of {name!r} failed", EXIT_FAILURE) from None
    return names


def _preload() -> None:
    import_preload()


def _ready_body() -> Dict[str, Any]:
    import platform

    return {
        "protocol": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "package": __version__,
    }


def _line_buffered_stdout() -> None:
    # stdout is a pipe, so Python would block-buffer it and the host would see prints late.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(line_buffering=True)
        except Exception:
            pass


def main() -> int:
    """Run the worker; the return value is the process exit status (``docs/protocol.md``)."""
    try:
        fd_in = _env_fd("PYVISOR_FD_IN")
        fd_out = _env_fd("PYVISOR_FD_OUT")
        for fd in (fd_in, fd_out):
            try:
                os.set_inheritable(fd, False)
                os.set_blocking(fd, True)
            except OSError as exc:
                raise _StartupError(f"protocol fd {fd} is not usable: {exc}", EXIT_USAGE) from None
        _check_protocol()
        max_frame = _max_frame()
        _start_group_reaper(fd_in)
        _preload()
    except _StartupError as exc:
        if exc.status != EXIT_FAILURE:  # a failed preload has already told its story
            _say(str(exc))
        flush_stdio()
        return exc.status

    _line_buffered_stdout()
    writer = FrameWriter(fd_out, max_frame)
    try:
        writer.send(READY, 0, value.encode(_ready_body()))
    except OSError:
        return EXIT_OK  # the host went away before the handshake

    ops = Ops(refs.current(), Policy.from_env(), max_frame)
    status = serve(Channel(fd_in, max_frame, writer), ops)
    flush_stdio()
    return status
