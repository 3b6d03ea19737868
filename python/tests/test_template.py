"""The template process with real processes: this pytest process plays the host.

Because the template forks with ``CLONE_PARENT``, forked workers are children of **this** process:
``os.waitpid`` on them works, which is itself the proof that the flag took effect.
"""

import json
import os
import platform
import signal
import socket
import subprocess
import sys
from typing import Any, Callable, Iterator, List

import pytest

from pyvisor_test_template_host import (
    PACKAGE_ROOT,
    TESTS_DIR,
    TIMEOUT,
    ForkedWorker,
    TemplateHost,
    fd_links,
    pipe_name,
    wait_exit,
    wait_readable,
)
from pyvisor_worker import clone, forked

CALLS = "pyvisor_test_template_calls"


Start = Callable[..., TemplateHost]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start templates (``TemplateHost`` arguments); all of them are cleaned up afterwards."""
    hosts: List[TemplateHost] = []

    def make(**kwargs: Any) -> TemplateHost:
        host = TemplateHost(**kwargs)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.cleanup()


@pytest.fixture
def template(start: Start) -> TemplateHost:
    """A ready template without preloads."""
    host = start()
    host.ready()
    return host


# -- startup --------------------------------------------------------------------------------------


def test_ready_describes_the_template(start: Start) -> None:
    host = start(preload=" json , pyvisor_test_preload,")
    assert host.ready() == {
        "op": "ready",
        "pid": host.proc.pid,
        "python": platform.python_version(),
        "preloaded": ["json", "pyvisor_test_preload"],
    }


def test_a_failing_preload_exits_1_with_its_traceback(start: Start) -> None:
    host = start(preload="json,pyvisor_no_such_module_xyz")
    assert host.wait() == 1
    err = host.err()
    assert (
        "pyvisor template: PYVISOR_TEMPLATE_PRELOAD: importing 'pyvisor_no_such_module_xyz' failed"
        in err
    )
    assert "Traceback (most recent call last)" in err
    assert "ModuleNotFoundError" in err
    assert not wait_readable(host.sock.fileno(), 0), "no ready datagram after a failed preload"


def test_a_preload_that_starts_a_thread_exits_2(start: Start) -> None:
    host = start(preload="json,pyvisor_test_thread_preload")
    assert host.wait() == 2  # promptly, although the thread is not a daemon
    err = host.err()
    assert "pyvisor template: preloading json, pyvisor_test_thread_preload started threads" in err
    assert "pyvisor-test-sleeper" in err and "2 OS threads" in err
    assert "forking a process with threads is unsafe" in err
    assert not wait_readable(host.sock.fileno(), 0)


def test_a_template_that_is_not_the_hosts_child_exits_2(start: Start) -> None:
    host = start(env={"PYVISOR_HOST_PID": "1"})
    assert host.wait() == 2
    assert "not the host PYVISOR_HOST_PID=1" in host.err()


def test_a_protocol_mismatch_exits_4(start: Start) -> None:
    host = start(env={"PYVISOR_PROTOCOL": "99"})
    assert host.wait() == 4
    assert "protocol version mismatch" in host.err()


def test_the_platform_is_supported_here() -> None:
    assert clone.unsupported_reason() is None


# -- forked workers -------------------------------------------------------------------------------


def test_a_forked_worker_is_the_hosts_child_in_a_group_of_its_own(template: TemplateHost) -> None:
    worker = template.fork(slot=3, generation=7)
    ready = worker.handshake()
    assert ready["pid"] == worker.pid and ready["protocol"] == 1
    assert worker.call("math", "sqrt", 2.0) == 2.0 ** 0.5
    me = worker.call(CALLS, "identity")
    assert me["pid"] == worker.pid
    assert me["ppid"] == os.getpid(), "CLONE_PARENT: the host is the parent, not the template"
    assert me["pgid"] == worker.pid
    assert (me["slot"], me["generation"]) == ("3", "7")
    assert worker.shutdown() == 0  # waitpid works: the worker is this process's child


def test_siblings_do_not_share_random_state(start: Start) -> None:
    host = start(preload="random,numpy,numpy.random,ssl")
    host.ready()
    first, second = host.fork(slot=0), host.fork(slot=1)
    first.handshake()
    second.handshake()
    a = first.call(CALLS, "randoms")
    b = second.call(CALLS, "randoms")
    assert len(a) == len(b) == 3, "numpy.random and ssl were preloaded"
    assert a[0] != b[0], "random reseeds in its at-fork hook (PyOS_AfterFork_Child ran)"
    assert a[1] != b[1], "numpy's global RandomState is reseeded explicitly"
    assert a[2] != b[2], "OpenSSL's generator"


def test_a_forked_worker_imports_nothing(start: Start) -> None:
    # -X importtime reports every `import` statement that loads a module, on fd 2 (here: the
    # worker's stderr pipe). It does not see importlib.import_module, which calls use.
    host = start(preload=CALLS, env={"PYTHONPROFILEIMPORTTIME": "1"})
    host.ready()
    worker = host.fork()
    worker.handshake()
    worker.call(CALLS, "say", "", "marker on stderr")
    err = worker.read_until(worker.stderr, "marker on stderr\n")
    assert "import time:" not in err, err


def test_a_child_that_dies_during_setup_is_reported_with_its_pid(start: Start) -> None:
    host = start(preload="pyvisor_test_broken_clone")
    host.ready()
    worker = ForkedWorker()
    host.workers.append(worker)
    request_id = host.request_fork(worker)
    reply = host.recv()
    assert reply["op"] == "fork_failed" and reply["id"] == request_id, reply
    assert reply["error"] == "the worker died during setup"
    assert wait_exit(reply["pid"]) == 1, "the failed child is the host's to reap"
    assert "set_pdeathsig broken by pyvisor_test_broken_clone" in host.err()
    host.send({"op": "nope", "id": 2})
    assert host.recv()["op"] == "fork_failed", "the template keeps serving"


def test_a_worker_holds_only_stdin_stdout_stderr_and_its_channel(template: TemplateHost) -> None:
    first, second = template.fork(), template.fork()
    for worker in (first, second):
        worker.handshake()
        me = worker.call(CALLS, "identity")
        links = fd_links(worker.pid)
        assert set(links) == {0, 1, 2, me["fd_in"], me["fd_out"]}, links
        assert links[0] == "/dev/null"
        assert links[1] == pipe_name(worker.stdout)
        assert links[2] == pipe_name(worker.stderr)
        assert links[me["fd_in"]] == pipe_name(worker.to_worker)
        assert links[me["fd_out"]] == pipe_name(worker.from_worker)
        assert "socket" not in " ".join(links.values()), "the template's socket is not inherited"


def test_stdout_and_stderr_go_to_the_given_pipes(template: TemplateHost) -> None:
    worker = template.fork()
    worker.handshake()
    assert worker.call(CALLS, "say", "hello on stdout", "hello on stderr") is True
    assert "hello on stdout" in worker.read_until(worker.stdout, "hello on stdout\n")
    assert "hello on stderr" in worker.read_until(worker.stderr, "hello on stderr\n")


def test_atexit_handlers_run_and_output_is_flushed_at_exit(template: TemplateHost) -> None:
    worker = template.fork()
    worker.handshake()
    worker.call(CALLS, "say_at_exit", "goodbye from atexit")
    assert worker.shutdown() == 0
    assert "goodbye from atexit" in worker.read_until(worker.stdout, "goodbye from atexit")


def test_a_worker_ends_when_the_host_closes_its_request_pipe(template: TemplateHost) -> None:
    worker = template.fork()
    worker.handshake()
    os.close(worker.to_worker)
    worker.to_worker = -1
    # It exits 0 at end of stream, unless its group reaper (it leads its own group, so it has
    # one, like a spawned worker) SIGKILLs the group first.
    assert worker.wait() in (0, -signal.SIGKILL)


def test_the_template_closes_the_descriptors_it_received(template: TemplateHost) -> None:
    before = template.open_fds()
    worker = template.fork()
    worker.handshake()
    assert template.open_fds() == before
    rogue = ForkedWorker()
    template.workers.append(rogue)
    template.send({"op": "fork", "id": 99, "slot": 0, "generation": 1}, rogue.child_fds()[:2])
    assert template.recv()["op"] == "fork_failed"
    assert template.open_fds() == before


def test_bad_requests_fail_and_the_template_keeps_serving(template: TemplateHost) -> None:
    spare = ForkedWorker()
    template.workers.append(spare)
    template.send(b"\xc1 not msgpack")
    template.send({"op": "spawn", "id": 5})
    template.send({"op": "fork", "id": 6, "slot": 0, "generation": 1}, spare.child_fds()[:3])
    template.send([1, 2, 3])
    template.send({"op": "fork", "id": 7, "slot": "zero", "generation": 1}, spare.child_fds())
    replies = [template.recv() for _ in range(5)]
    assert [(r["op"], r["id"]) for r in replies] == [
        ("fork_failed", 0), ("fork_failed", 5), ("fork_failed", 6), ("fork_failed", 0),
        ("fork_failed", 7),
    ]
    assert "not MessagePack" in replies[0]["error"]
    assert "unknown op 'spawn'" in replies[1]["error"]
    assert "carried 3" in replies[2]["error"]
    assert "not a map" in replies[3]["error"]
    assert "bad slot" in replies[4]["error"]
    worker = template.fork()
    assert worker.handshake()["pid"] == worker.pid


def test_requests_are_answered_in_order(template: TemplateHost) -> None:
    workers = [ForkedWorker() for _ in range(4)]
    template.workers.extend(workers)
    ids = [template.request_fork(w, slot=i) for i, w in enumerate(workers)]
    replies = [template.recv() for _ in workers]
    assert [(r["op"], r["id"]) for r in replies] == [("forked", i) for i in ids]
    for worker, reply in zip(workers, replies):
        worker.close_child_ends()
        worker.pid = reply["pid"]
        assert worker.handshake()["pid"] == worker.pid
    assert len({w.pid for w in workers}) == len(workers)


# -- lifetimes ------------------------------------------------------------------------------------


def test_killing_the_template_does_not_kill_its_workers(template: TemplateHost) -> None:
    worker = template.fork()
    worker.handshake()
    template.proc.kill()
    assert template.wait() == -signal.SIGKILL
    assert worker.call("math", "sqrt", 16.0) == 4.0
    assert worker.call(CALLS, "identity")["ppid"] == os.getpid()
    assert worker.shutdown() == 0


def test_an_empty_datagram_stops_the_template(template: TemplateHost) -> None:
    template.send(b"")
    assert template.wait() == 0


def test_closing_a_seqpacket_channel_stops_the_template(start: Start) -> None:
    host = start(kind=socket.SOCK_SEQPACKET)
    host.ready()
    host.sock.shutdown(socket.SHUT_RDWR)
    assert host.wait() == 0


def test_a_host_gone_before_the_reply_stops_the_template(template: TemplateHost) -> None:
    worker = ForkedWorker()
    template.workers.append(worker)
    template.request_fork(worker)
    template.sock.close()  # the template's reply then fails with ECONNREFUSED
    worker.close_child_ends()
    assert template.wait() == 0
    worker.pid = worker.handshake()["pid"]  # the worker was forked all the same
    assert worker.call("math", "sqrt", 9.0) == 3.0


def test_workers_and_template_die_with_their_host() -> None:
    request_read, request_write = os.pipe()
    env = dict(os.environ, PYVISOR_TEST_REQUEST_FD=str(request_read))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(PACKAGE_ROOT)])
    host = subprocess.Popen(
        [sys.executable, "-m", "pyvisor_test_template_host"],
        env=env, pass_fds=(request_read,), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    os.close(request_read)
    pidfds = []
    try:
        assert wait_readable(host.stdout.fileno(), TIMEOUT), "the host printed no pids"
        pids = json.loads(host.stdout.readline())
        pidfds = [os.pidfd_open(pids["template"]), os.pidfd_open(pids["worker"])]
        assert fd_links(pids["worker"]), "the worker is alive"
        host.kill()
        host.wait()
        # The worker's request pipe is still open here, so nothing but PR_SET_PDEATHSIG
        # (set in the child, relative to the host: CLONE_PARENT) can have ended it.
        for pidfd in pidfds:
            assert wait_readable(pidfd, TIMEOUT), "a process outlived its host"
    finally:
        for pidfd in pidfds:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(pidfd)
        if host.poll() is None:
            host.kill()
            host.wait()
        host.stdin.close()
        host.stdout.close()
        os.close(request_write)


# -- units ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (3, 3), (256 + 5, 5), (True, 1)])
def test_exit_status_follows_sys_exit(code: object, status: int) -> None:
    assert forked._exit_status(code) == status


def test_a_string_exit_code_is_printed_and_gives_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert forked._exit_status("bye") == 1
    assert capsys.readouterr().err == "bye\n"


def test_descriptors_a_preload_opened_point_at_dev_null_in_the_worker(start: Start) -> None:
    host = start(preload="pyvisor_test_open_file_preload")
    host.ready()
    worker = host.fork()
    worker.handshake()
    fd = worker.call("pyvisor_test_open_file_preload", "held_fd")
    links = fd_links(worker.pid)
    assert links[fd] == "/dev/null", "the number stays taken, the file is not shared"
    assert worker.call("pyvisor_test_open_file_preload", "write_through_module", b"x") == 1
    template_links = fd_links(host.proc.pid)
    assert template_links[fd] != "/dev/null", "the template keeps its own file"
