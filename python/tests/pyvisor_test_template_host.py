"""The host side of a template process, for tests (``docs/protocol.md``, "Template process").

``TemplateHost`` starts ``python -m pyvisor_worker.template`` as a child of the calling process
and speaks its datagram protocol; ``ForkedWorker`` is the host side of one forked worker (its four
pipes, its pid). Run as a script, this module is a minimal host of its own (``host_main``): the
tests SIGKILL it to check that its template and workers die with it.

Every wait has a timeout and waits for something observable (a readable fd, a pidfd).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import msgpack

from pyvisor_worker import clone, value
from pyvisor_worker.protocol import (
    CALL,
    DEFAULT_MAX_FRAME,
    OK,
    READY,
    SHUTDOWN,
    FrameWriter,
    decode_envelope,
    read_frame,
)

TESTS_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = TESTS_DIR.parent
TIMEOUT = 20.0
"""Failure guard for every wait; the tests normally finish far sooner."""

THREAD_LIMITS = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
"""What the host sets for every worker (spawn.rs ENV_DEFAULTS): numpy's BLAS starts no threads."""


def wait_readable(fd: int, timeout: float = TIMEOUT) -> bool:
    """Whether ``fd`` becomes readable within ``timeout`` seconds."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


def wait_exit(pid: int, timeout: float = TIMEOUT) -> int:
    """Reap the child ``pid`` once it has exited; its exit code (``-N`` for signal ``N``)."""
    pidfd = os.pidfd_open(pid)
    try:
        if not wait_readable(pidfd, timeout):
            raise AssertionError(f"process {pid} did not exit within {timeout} s")
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def fd_links(pid: int) -> Dict[int, str]:
    """The open descriptors of process ``pid`` and what they point to."""
    links = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            links[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:  # closed meanwhile
            pass
    return links


def pipe_name(fd: int) -> str:
    """How ``/proc/<pid>/fd`` shows the pipe that ``fd`` is an end of."""
    return f"pipe:[{os.fstat(fd).st_ino}]"


class ForkedWorker:
    """The host side of one forked worker: four pipes, then its pid."""

    def __init__(self, request_read_end: Optional[int] = None) -> None:
        if request_read_end is None:
            self.child_in, self.to_worker = os.pipe()
        else:  # the request pipe's write end is held elsewhere (see host_main)
            self.child_in, self.to_worker = request_read_end, -1
        self.from_worker, self.child_out = os.pipe()
        self.stdout, self.child_stdout = os.pipe()
        self.stderr, self.child_stderr = os.pipe()
        self.pid: Optional[int] = None
        self.status: Optional[int] = None
        self._next_id = 0
        self._writer = FrameWriter(self.to_worker)

    def child_fds(self) -> List[int]:
        """The fork request's descriptors, in protocol order."""
        return [self.child_in, self.child_out, self.child_stdout, self.child_stderr]

    def close_child_ends(self) -> None:
        for name in ("child_in", "child_out", "child_stdout", "child_stderr"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    # -- protocol -------------------------------------------------------------------------------

    def recv(self, timeout: float = TIMEOUT) -> Optional[Tuple[int, int, Any]]:
        """The next ``(op, id, body)`` from the worker, ``None`` at end of stream."""
        if not wait_readable(self.from_worker, timeout):
            raise AssertionError(f"worker {self.pid} sent nothing within {timeout} s")
        payload = read_frame(self.from_worker, DEFAULT_MAX_FRAME)
        return None if payload is None else decode_envelope(payload)

    def handshake(self) -> Dict[str, Any]:
        message = self.recv()
        assert message is not None, "the worker closed its channel before READY"
        op, request_id, body = message
        assert (op, request_id) == (READY, 0), message
        return body

    def send(self, op: int, body: Any) -> int:
        self._next_id += 1
        self._writer.send(op, self._next_id, value.encode(body))
        return self._next_id

    def call(self, module: str, function: str, *args: Any) -> Any:
        """Run ``module.function(*args)`` in the worker and return its result (asserting OK)."""
        request_id = self.send(CALL, {
            "module": module, "function": function, "args": list(args), "kwargs": None,
            "session": None,
        })
        message = self.recv()
        assert message is not None, "the worker closed its channel"
        op, reply_id, body = message
        assert (op, reply_id) == (OK, request_id), message
        return body

    def shutdown(self) -> int:
        """Send SHUTDOWN and reap the worker; its exit code."""
        self.send(SHUTDOWN, None)
        return self.wait()

    # -- output and process ---------------------------------------------------------------------

    def read_until(self, fd: int, needle: str, timeout: float = TIMEOUT) -> str:
        """Read the pipe ``fd`` until its output contains ``needle``; all of it so far."""
        data = b""
        while needle.encode() not in data:
            if not wait_readable(fd, timeout):
                raise AssertionError(f"{needle!r} not in the output within {timeout} s: {data!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"{needle!r} not in the output at its end: {data!r}")
            data += chunk
        return data.decode("utf-8", "replace")

    def wait(self, timeout: float = TIMEOUT) -> int:
        """Reap the worker (a child of this process: CLONE_PARENT); its exit code."""
        assert self.pid is not None and self.status is None
        self.status = wait_exit(self.pid, timeout)
        return self.status

    def cleanup(self) -> None:
        """Kill the worker's process group (its reaper included), reap it, close every pipe."""
        if self.pid is not None and self.status is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.wait()
            except ChildProcessError:
                pass
        self.close_child_ends()
        for fd in (self.to_worker, self.from_worker, self.stdout, self.stderr):
            if fd >= 0:
                os.close(fd)
        self.to_worker = self.from_worker = self.stdout = self.stderr = -1


class TemplateHost:
    """Starts a template process and speaks its datagram protocol."""

    def __init__(
        self,
        preload: str = "",
        env: Optional[Dict[str, str]] = None,
        kind: int = socket.SOCK_DGRAM,
        pdeathsig: bool = False,
    ) -> None:
        self.sock, child = socket.socketpair(socket.AF_UNIX, kind)
        full_env = dict(os.environ)
        for name in ("PYVISOR_PRELOAD", "PYVISOR_MAX_FRAME", "PYTHONUNBUFFERED"):
            full_env.pop(name, None)
        full_env.update(THREAD_LIMITS)
        full_env.update(
            PYVISOR_PROTOCOL="1",
            PYVISOR_POOL="test",
            PYVISOR_TEMPLATE_FD=str(child.fileno()),
            PYVISOR_TEMPLATE_PRELOAD=preload,
            PYVISOR_HOST_PID=str(os.getpid()),
            PYTHONPATH=os.pathsep.join(
                p for p in (str(TESTS_DIR), str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        )
        full_env.update(env or {})
        self.out = tempfile.TemporaryFile()
        self.errors = tempfile.TemporaryFile()
        self.workers: List[ForkedWorker] = []
        self._next_id = 0
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pyvisor_worker.template"],
                pass_fds=(child.fileno(),),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=self.out,
                stderr=self.errors,
                start_new_session=True,
                preexec_fn=(lambda: clone.set_pdeathsig(signal.SIGKILL)) if pdeathsig else None,
            )
        finally:
            child.close()

    # -- datagrams ------------------------------------------------------------------------------

    def send(self, message: Any, fds: Sequence[int] = ()) -> None:
        data = message if isinstance(message, bytes) else msgpack.packb(message)
        socket.send_fds(self.sock, [data], list(fds))

    def recv(self, timeout: float = TIMEOUT) -> Dict[str, Any]:
        if not wait_readable(self.sock.fileno(), timeout):
            raise AssertionError(f"the template sent nothing within {timeout} s; "
                                 f"stderr:\n{self.err()}")
        data = self.sock.recv(65536)
        assert data, "empty datagram from the template"
        return msgpack.unpackb(data, raw=False)

    def ready(self) -> Dict[str, Any]:
        message = self.recv()
        assert message["op"] == "ready", message
        return message

    def request_fork(self, worker: ForkedWorker, slot: int = 0, generation: int = 1) -> int:
        """Send a fork request for ``worker``'s pipes; its id."""
        self._next_id += 1
        self.send(
            {"op": "fork", "id": self._next_id, "slot": slot, "generation": generation},
            worker.child_fds(),
        )
        return self._next_id

    def fork(self, slot: int = 0, generation: int = 1,
             request_read_end: Optional[int] = None) -> ForkedWorker:
        """Fork a worker, check the reply, return it (READY not read yet)."""
        worker = ForkedWorker(request_read_end)
        self.workers.append(worker)
        request_id = self.request_fork(worker, slot, generation)
        reply = self.recv()
        worker.close_child_ends()
        assert reply.get("op") == "forked" and reply.get("id") == request_id, reply
        worker.pid = reply["pid"]
        return worker

    # -- process --------------------------------------------------------------------------------

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the template did not exit; stderr:\n{self.err()}") from None

    def err(self) -> str:
        self.errors.seek(0)
        return self.errors.read().decode("utf-8", "replace")

    def open_fds(self) -> Set[int]:
        return set(fd_links(self.proc.pid))

    def cleanup(self) -> None:
        """Kill and reap the template and every worker it forked; close everything."""
        try:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        finally:
            for worker in self.workers:
                worker.cleanup()
            self.sock.close()
            self.out.close()
            self.errors.close()


def host_main() -> None:
    """A host process of its own: template (with PDEATHSIG) and one forked worker.

    The worker reads requests from the inherited fd ``PYVISOR_TEST_REQUEST_FD``, whose write end
    the test keeps: the worker sees no end of stream when this host dies, only its PDEATHSIG
    can end it. Prints ``{"template": pid, "worker": pid}`` and waits to be killed.
    """
    request_fd = int(os.environ.pop("PYVISOR_TEST_REQUEST_FD"))
    host = TemplateHost(pdeathsig=True)
    host.ready()
    worker = host.fork(request_read_end=request_fd)
    worker.handshake()
    print(json.dumps({"template": host.proc.pid, "worker": worker.pid}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    host_main()
