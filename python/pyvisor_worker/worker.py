"""The worker process: handshake, the I/O thread and the interpreter thread.

``main()`` runs on the process's main thread, which is the **interpreter thread**: it runs every
request, one at a time, in arrival order. A daemon **I/O thread** reads frames, answers ``PING``
itself (so a busy worker still answers) and queues everything else for the interpreter thread. The
I/O thread reads only the envelope header ``[op, id,``; request bodies are decoded on the
interpreter thread (``ops.Ops``), where refs are resolved in order.
"""

from __future__ import annotations

import importlib
import os
import queue
import sys
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional

from . import __version__, calls, refs, value
from .ops import Ops
from .stdio import flush_stdio
from .policy import Policy
from .protocol import (
    DEFAULT_MAX_FRAME,
    ERROR,
    EXIT_OK,
    EXIT_PROTOCOL,
    EXIT_FAILURE,
    EXIT_USAGE,
    EXIT_VERSION,
    KIND_FRAME_TOO_LARGE,
    OK,
    PING,
    PONG,
    PROTOCOL_VERSION,
    READY,
    SHUTDOWN,
    FrameTooLarge,
    FrameWriter,
    ProtocolError,
    check_body,
    read_frame,
    split_envelope,
)

__all__ = ["main", "WATCHDOG_SECONDS"]

WATCHDOG_SECONDS = 2.0
"""After the request channel closes, the process exits this long later even if a call is stuck."""

_NIL = b"\xc0"
_STOP = object()


class _StartupError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _say(message: str) -> None:
    """One line for the host's stderr capture."""
    try:
        sys.stderr.write(f"pyvisor worker: {message}\n")
        sys.stderr.flush()
    except Exception:  # stderr closed or broken: nothing else to report to
        pass


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


def _arm_exit_timer(delay: float, status: int) -> None:
    timer = threading.Timer(delay, os._exit, args=(status,))
    timer.daemon = True
    timer.name = "pyvisor-watchdog"
    timer.start()


def _io_loop(fd_in: int, max_frame: int, writer: FrameWriter, items: "queue.SimpleQueue[Any]") -> None:
    """The I/O thread: read frames until ``SHUTDOWN`` or end of stream."""
    put = items.put
    send = writer.send
    try:
        while True:
            payload = read_frame(fd_in, max_frame)
            if payload is None:
                break  # the host closed the channel (or died)
            op, request_id, body = split_envelope(payload)
            if op == PING:
                check_body(body)
                send(PONG, request_id, _NIL)
            elif op == SHUTDOWN:
                check_body(body)
                put(_STOP)
                return
            else:
                put((op, request_id, body))
    except ProtocolError as exc:
        _say(f"protocol violation from the host: {exc}")
        flush_stdio()
        os._exit(EXIT_PROTOCOL)
    except OSError:
        pass  # the channel broke (e.g. PONG to a host that is gone): same as end of stream
    except BaseException:  # a bug here would leave the worker deaf: fail loudly instead
        _say("I/O thread failed")
        traceback.print_exc()
        flush_stdio()
        os._exit(EXIT_FAILURE)
    put(_STOP)
    _arm_exit_timer(WATCHDOG_SECONDS, EXIT_OK)


def _truncate(text: str, limit: int, keep_tail: bool) -> str:
    if len(text) <= limit:
        return text
    marker = "...[truncated]..."
    keep = max(0, limit - len(marker))
    return marker + text[len(text) - keep:] if keep_tail else text[:keep] + marker


def _send_error(writer: FrameWriter, request_id: int, error: Dict[str, str]) -> None:
    try:
        body = value.encode(error)
    except value.EncodeError:
        # A message or traceback with lone surrogates (e.g. undecodable file names).
        error = {
            k: v.encode("utf-8", "backslashreplace").decode("utf-8") for k, v in error.items()
        }
        body = value.encode(error)
    try:
        writer.send(ERROR, request_id, body)
        return
    except FrameTooLarge:
        pass
    limit = writer.max_frame // 16
    error = dict(error)
    error["message"] = _truncate(error["message"], limit, keep_tail=False)
    error["traceback"] = _truncate(error["traceback"], limit, keep_tail=True)
    try:
        writer.send(ERROR, request_id, value.encode(error))
    except FrameTooLarge:  # an absurdly small PYVISOR_MAX_FRAME: send the bare kind
        writer.send(ERROR, request_id, value.encode(calls.error_map(error["kind"])))


def _serve(items: "queue.SimpleQueue[Any]", writer: FrameWriter, ops: Ops) -> int:
    """The interpreter thread: run queued requests until the stop marker."""
    get = items.get
    send = writer.send
    handle = ops.handle
    try:
        while True:
            item = get()
            if item is _STOP:
                return EXIT_OK
            op, request_id, body = item
            item = None
            try:
                ok, reply = handle(op, request_id, body)
            except ProtocolError as exc:
                _say(f"protocol violation from the host: {exc}")
                flush_stdio()
                os._exit(EXIT_PROTOCOL)
            except Exception as exc:  # a bug in the worker itself: report it, keep serving
                ok, reply = False, calls.exception_error(exc)
            # Do not keep the last request alive while waiting for the next one.
            body = None
            if ok:
                try:
                    send(OK, request_id, reply)
                except FrameTooLarge as exc:  # ops checks the size first: only a safety net
                    _send_error(writer, request_id, calls.error_map(
                        KIND_FRAME_TOO_LARGE, message=(
                            f"the result encodes to a {exc.size}-byte frame, above the "
                            f"{exc.limit}-byte limit")))
            else:
                _send_error(writer, request_id, reply)
            reply = None
    except OSError:
        return EXIT_OK  # the reply channel is gone: so is the host


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

    items: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
    reader = threading.Thread(
        target=_io_loop, args=(fd_in, max_frame, writer, items), name="pyvisor-io", daemon=True
    )
    reader.start()
    ops = Ops(refs.current(), Policy.from_env(), max_frame)
    status = _serve(items, writer, ops)
    flush_stdio()
    return status
