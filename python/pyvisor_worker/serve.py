"""Serving requests: who reads the request channel, and when.

The **interpreter thread** (the process's main thread) runs every request, one at a time, in
arrival order. While it is idle it also reads the request channel itself, so a call costs no
hand-off between threads: the host's write wakes the thread that runs the call.

While a call runs, the **watch thread** covers the channel: every ``TICK`` seconds it checks
whether a call is running and, if so, reads whatever frames have arrived. It answers ``PING``
itself (a busy worker still answers heartbeats), and keeps everything else in ``pending`` for the
interpreter thread, in order: further requests, ``SHUTDOWN``, and the end of the stream (which
also arms the exit watchdog, so a stuck call cannot keep the process alive).

One lock, ``reading``, is held by whichever thread reads: the interpreter thread holds it while
it waits for a request, the watch thread only around a non-blocking sweep. Frames are therefore
read whole, by one thread at a time, and ``pending`` is always drained before the channel is read
again. After ``PARK_AFTER`` idle ticks the watch thread parks on an event, so an idle worker
wakes nobody; the first call after a long idle period sets the event (the only per-call cost is
a flag test).
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
import traceback
from typing import Any, Deque, Dict

from . import accel, calls, value
from .ops import Ops
from .protocol import (
    ERROR,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PROTOCOL,
    KIND_FRAME_TOO_LARGE,
    OK,
    PING,
    PONG,
    SHUTDOWN,
    FrameTooLarge,
    FrameReader,
    FrameWriter,
    ProtocolError,
    check_body,
    split_envelope,
)
from .stdio import flush_stdio

__all__ = ["Channel", "serve", "TICK", "PARK_AFTER", "WATCHDOG_SECONDS"]

TICK = 0.01
"""How often (seconds) the watch thread looks at the channel while a call runs."""

PARK_AFTER = 20
"""Consecutive idle ticks after which the watch thread parks until the next call."""

WATCHDOG_SECONDS = 2.0
"""After the request channel closes, the process exits this long later even if a call is stuck."""

_NIL = b"\xc0"
_STOP = object()
"""From the channel: ``SHUTDOWN`` or the end of the stream; serve no further request."""


def say(message: str) -> None:
    """One line for the host's stderr capture."""
    import sys

    try:
        sys.stderr.write(f"pyvisor worker: {message}\n")
        sys.stderr.flush()
    except Exception:  # stderr closed or broken: nothing else to report to
        pass


def _protocol_exit(exc: ProtocolError) -> None:
    say(f"protocol violation from the host: {exc}")
    flush_stdio()
    os._exit(EXIT_PROTOCOL)


def _arm_exit_timer(delay: float, status: int) -> None:
    timer = threading.Timer(delay, os._exit, args=(status,))
    timer.daemon = True
    timer.name = "pyvisor-watchdog"
    timer.start()


class Channel:
    """The request channel as the two threads share it (see the module docstring)."""

    def __init__(self, fd_in: int, max_frame: int, writer: FrameWriter) -> None:
        self.frames = FrameReader(fd_in, max_frame)
        self.split = accel.splitter()
        """The C envelope split, tried before ``split_envelope`` (``None``: not available)."""
        self.poller = select.poll()
        self.poller.register(fd_in, select.POLLIN)
        self.writer = writer
        self.reading = threading.Lock()
        self.pending: Deque[Any] = collections.deque()
        self.busy = False
        self.parked = False
        self.wake = threading.Event()
        self.closed = False
        self.ended = False

    def _read(self) -> Any:
        """One frame, classified: ``None`` (a ``PING`` answered here), ``_STOP`` or a request.

        ``SHUTDOWN`` and the end of the stream (``ended``) both close the channel: nothing is
        read after them.
        """
        payload = self.frames.read()
        if payload is None:
            self.closed = self.ended = True
            return _STOP
        split = self.split
        op, request_id, body = (split and split(payload)) or split_envelope(payload)
        if op == PING:
            check_body(body)
            self.writer.send(PONG, request_id, _NIL)
            return None
        if op == SHUTDOWN:
            check_body(body)
            self.closed = True
            return _STOP
        return (op, request_id, body)

    def next_request(self) -> Any:
        """The next request for the interpreter thread (or ``_STOP``), waiting for it if needed."""
        with self.reading:
            while True:
                if self.pending:
                    return self.pending.popleft()
                if self.closed:
                    return _STOP
                item = self._read()
                if item is not None:
                    return item

    def start_call(self) -> None:
        """The interpreter thread starts running a call: the watch thread takes over reading."""
        self.busy = True
        if self.parked:
            self.wake.set()

    def sweep(self) -> None:
        """The watch thread's turn: read every frame already waiting while a call runs.

        The interpreter thread holds ``reading`` only while it waits for a request, i.e. when no
        call runs: then there is nothing to do.
        """
        if not self.reading.acquire(blocking=False):
            return
        try:
            poll = self.poller.poll
            while self.busy and not self.closed and (self.frames.buffered() or poll(0)):
                item = self._read()
                if item is not None:
                    self.pending.append(item)
        finally:
            self.reading.release()


def watch(channel: Channel) -> None:
    """The watch thread: sweeps the channel while calls run, parks while the worker idles.

    Ends when the channel closes; after the end of the stream (not after ``SHUTDOWN``) it arms
    the exit watchdog, so that a stuck call cannot keep the process alive.
    """
    try:
        idle_ticks = 0
        while not channel.closed:
            if channel.busy:
                idle_ticks = 0
            else:
                idle_ticks += 1
            if idle_ticks >= PARK_AFTER:
                idle_ticks = 0
                # start_call sets busy, then tests parked; here parked is set, then busy tested:
                # under the GIL one of the two always sees the other's write.
                channel.wake.clear()
                channel.parked = True
                if not channel.busy:
                    channel.wake.wait()
                channel.parked = False
                continue
            time.sleep(TICK)
            if channel.busy:
                channel.sweep()
    except ProtocolError as exc:
        _protocol_exit(exc)
    except OSError:
        # The channel broke (e.g. a PONG to a host that is gone): same as the end of the stream.
        channel.closed = channel.ended = True
    except BaseException:  # a bug here would leave the worker deaf: fail loudly instead
        say("watch thread failed")
        traceback.print_exc()
        flush_stdio()
        os._exit(EXIT_FAILURE)
    if channel.ended:
        _arm_exit_timer(WATCHDOG_SECONDS, EXIT_OK)


def _truncate(text: str, limit: int, keep_tail: bool) -> str:
    if len(text) <= limit:
        return text
    marker = "...[truncated]..."
    keep = max(0, limit - len(marker))
    return marker + text[len(text) - keep:] if keep_tail else text[:keep] + marker


def send_error(writer: FrameWriter, request_id: int, error: Dict[str, str]) -> None:
    """Send an ``ERROR`` reply, shortened if needed to fit the frame limit."""
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


def serve(channel: Channel, ops: Ops) -> int:
    """The interpreter thread: run requests until ``SHUTDOWN`` or the end of the stream.

    Starts the watch thread, and returns the process exit status.
    """
    threading.Thread(target=watch, args=(channel,), name="pyvisor-io", daemon=True).start()
    # Bound once: the loop below runs for every request.
    handle = ops.handle
    writer = channel.writer
    send = writer.send
    send_frame = writer.send_frame
    next_request = channel.next_request
    start_call = channel.start_call
    try:
        while True:
            try:
                item = next_request()
            except ProtocolError as exc:
                _protocol_exit(exc)
            if item is _STOP:
                return EXIT_OK
            op, request_id, body = item
            item = None
            start_call()
            try:
                ok, reply = handle(op, request_id, body)
            except ProtocolError as exc:
                _protocol_exit(exc)
            except Exception as exc:  # a bug in the worker itself: report it, keep serving
                ok, reply = False, calls.exception_error(exc)
            # Do not keep the last request alive while waiting for the next one.
            body = None
            try:
                if ok is None:  # the C accelerator's reply, framed already
                    send_frame(reply)
                elif ok:
                    send(OK, request_id, reply)
                else:
                    send_error(writer, request_id, reply)
            except FrameTooLarge as exc:  # ops checks the size first: only a safety net
                send_error(writer, request_id, calls.error_map(KIND_FRAME_TOO_LARGE, message=(
                    f"the result encodes to a {exc.size}-byte frame, above the "
                    f"{exc.limit}-byte limit")))
            finally:
                reply = None
                channel.busy = False
    except OSError:
        return EXIT_OK  # the reply channel is gone: so is the host
