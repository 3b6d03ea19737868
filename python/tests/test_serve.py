"""The request channel shared by the interpreter thread and the watch thread (``serve.py``).

These drive ``Channel`` and ``watch`` in-process over real pipes; ``test_worker.py`` covers the
same behaviour through a real worker process.
"""

import os
import select
import threading
import time

import pytest

from pyvisor_worker import serve
from pyvisor_worker.protocol import (
    CALL,
    PING,
    PONG,
    SHUTDOWN,
    FrameWriter,
    encode_envelope,
    read_frame,
    split_envelope,
)

NIL = b"\xc0"
WAIT = 5.0


def frame(op, request_id, body=NIL):
    payload = encode_envelope(op, request_id, body)
    return len(payload).to_bytes(4, "big") + payload


def wait_for(predicate, what):
    """Polls an observable condition (not a sleep standing in for one) until WAIT passes."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


def read_reply(fd):
    ready, _, _ = select.select([fd], [], [], WAIT)
    assert ready, "no reply within the wait"
    op, request_id, _ = split_envelope(read_frame(fd, 1 << 20))
    return op, request_id


@pytest.fixture
def channel():
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    ch = serve.Channel(req_r, 1 << 20, FrameWriter(rep_w))
    ch.host_w, ch.host_r = req_w, rep_r
    ch.threads = []
    yield ch
    ch.closed, ch.busy = True, False
    ch.wake.set()
    for thread in ch.threads:
        thread.join(WAIT)
    for fd in (req_r, req_w, rep_r, rep_w):
        try:
            os.close(fd)
        except OSError:
            pass


def start_watch(ch):
    thread = threading.Thread(target=serve.watch, args=(ch,), daemon=True)
    thread.start()
    ch.threads.append(thread)
    return thread


def test_an_idle_interpreter_answers_ping_itself_and_returns_the_next_request(channel):
    os.write(channel.host_w, frame(PING, 7) + frame(CALL, 8, b"\x90"))
    op, request_id, body = channel.next_request()
    assert (op, request_id, bytes(body)) == (CALL, 8, b"\x90")
    assert read_reply(channel.host_r) == (PONG, 7)


def test_while_a_call_runs_the_watch_thread_answers_ping_and_keeps_requests_in_order(channel):
    start_watch(channel)
    channel.start_call()
    os.write(channel.host_w, frame(CALL, 1) + frame(PING, 2) + frame(CALL, 3) + frame(SHUTDOWN, 4))
    assert read_reply(channel.host_r) == (PONG, 2)
    wait_for(lambda: channel.closed, "the watch thread to read SHUTDOWN")
    channel.busy = False
    assert [channel.next_request()[1] for _ in range(2)] == [1, 3]
    assert channel.next_request() is serve._STOP
    assert not channel.ended


def test_a_parked_watch_thread_wakes_for_the_next_call(channel):
    start_watch(channel)
    wait_for(lambda: channel.parked, "the idle watch thread to park")
    channel.start_call()
    os.write(channel.host_w, frame(PING, 9))
    assert read_reply(channel.host_r) == (PONG, 9)
    assert not channel.parked


def test_end_of_stream_during_a_call_ends_the_channel_and_arms_the_watchdog(channel, monkeypatch):
    armed = []
    monkeypatch.setattr(serve, "_arm_exit_timer", lambda delay, status: armed.append(status))
    thread = start_watch(channel)
    channel.start_call()
    os.close(channel.host_w)
    thread.join(WAIT)
    assert not thread.is_alive()
    assert channel.ended and armed == [serve.EXIT_OK]
    channel.busy = False
    assert channel.next_request() is serve._STOP


def test_shutdown_read_while_idle_stops_without_a_watchdog(channel, monkeypatch):
    armed = []
    monkeypatch.setattr(serve, "_arm_exit_timer", lambda delay, status: armed.append(status))
    os.write(channel.host_w, frame(SHUTDOWN, 1))
    assert channel.next_request() is serve._STOP
    assert channel.closed and not channel.ended and armed == []
