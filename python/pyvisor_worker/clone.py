"""Process primitives of the template (``docs/protocol.md``, "Template process").

``clone_parent()`` forks the calling process with the raw ``clone`` system call and the flags
``CLONE_PARENT | SIGCHLD``: the new process is a child of the caller's **parent** (the host), not
of the caller (the template). The host therefore reaps it and sees its exit status, its
``PR_SET_PDEATHSIG`` refers to the host, and it outlives a template that crashes. ``os.fork()``
cannot do this, so the call goes through ``ctypes`` and is wrapped exactly like CPython wraps
``fork()`` in ``os.fork``: ``PyOS_BeforeFork()`` before, ``PyOS_AfterFork_Child()`` in the child
and ``PyOS_AfterFork_Parent()`` in the parent. These run the ``os.register_at_fork`` hooks
(``random`` reseeds itself, ``threading`` and ``logging`` reinitialise their locks) and reset the
interpreter's own state (import lock, thread states). The call is made through ``ctypes.PyDLL``,
so the GIL stays held across it, as in ``os.fork``.

Caveats, all of which follow from bypassing libc's ``fork()``:

* C-level ``pthread_atfork`` handlers of loaded libraries do **not** run, nor does libc's own
  fork bookkeeping (malloc arena locks, stdio locks). This is safe only while no other thread
  exists that could hold such a lock at the moment of the clone: the template must be
  single-threaded, and checks it before it serves anything.
* Libraries that reseed or reset themselves in a ``pthread_atfork`` child handler (OpenSSL's
  RNG, for one) do not; the template reseeds the generators it knows of explicitly
  (``numpy.random``'s global ``RandomState`` and OpenSSL's pool).
* glibc's record of the main thread's kernel thread id (used by ``pthread_kill`` on the main
  thread and by error-checking and recursive mutexes) keeps the template's value; ``getpid()``,
  ``gettid()`` and ``raise()`` ask the kernel and are correct.

Only Linux on x86_64 and aarch64 is supported: the ``clone`` argument order and system call
number are architecture-specific (``unsupported_reason()`` says why elsewhere).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys
from typing import Iterable, Optional

from .stdio import flush_stdio

__all__ = [
    "CLONE_PARENT",
    "SIGCHLD",
    "PR_SET_PDEATHSIG",
    "unsupported_reason",
    "clone_parent",
    "set_pdeathsig",
    "detach_fds_except",
]

CLONE_PARENT = 0x00008000
"""The new process gets the caller's parent as its parent."""

SIGCHLD = 17
"""The signal the parent receives when the new process exits (the low byte of the flags)."""

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process receives when its parent (thread) exits."""

_SYS_CLONE = {"x86_64": 56, "aarch64": 220}
"""``SYS_clone`` by machine. Both take (flags, newsp, parent_tid, child_tid / tls, ...)."""


def unsupported_reason() -> Optional[str]:
    """Why ``clone_parent()`` cannot work on this platform, or ``None`` when it can."""
    if not sys.platform.startswith("linux"):
        return f"the template needs Linux (this is {sys.platform})"
    machine = platform.machine()
    if machine not in _SYS_CLONE:
        return (
            f"the template's raw clone() supports x86_64 and aarch64 only (this is {machine})"
        )
    if struct.calcsize("P") != 8:
        return "the template's raw clone() needs a 64-bit Python"
    if sys.implementation.name != "cpython":
        return f"the template needs CPython's fork hooks (this is {sys.implementation.name})"
    return None


_libc: Optional[ctypes.PyDLL] = None


def _lib() -> ctypes.PyDLL:
    """The process's own symbols (libc included), called with the GIL held."""
    global _libc
    if _libc is None:
        lib = ctypes.PyDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.prctl.restype = ctypes.c_int
        api = ctypes.pythonapi
        for name in ("PyOS_BeforeFork", "PyOS_AfterFork_Child", "PyOS_AfterFork_Parent"):
            func = getattr(api, name)
            func.argtypes = []
            func.restype = None
        _libc = lib
    return _libc


def clone_parent() -> int:
    """Fork with ``clone(CLONE_PARENT | SIGCHLD)``: 0 in the child, the child's pid in the caller.

    Raises ``OSError`` (with the system call's errno) when the clone fails, and ``RuntimeError``
    on an unsupported platform. ``sys.stdout`` and ``sys.stderr`` are flushed first so that the
    child does not write the caller's buffered output a second time. An exception that would
    escape in the child ends the child with status 1: it never returns into the caller's code
    with an exception.
    """
    reason = unsupported_reason()
    if reason is not None:
        raise RuntimeError(reason)
    lib = _lib()
    api = ctypes.pythonapi
    number = _SYS_CLONE[platform.machine()]
    caller = os.getpid()
    sys.audit("os.fork")
    flush_stdio()
    api.PyOS_BeforeFork()
    pid = lib.syscall(
        ctypes.c_long(number),
        ctypes.c_long(CLONE_PARENT | SIGCHLD),
        ctypes.c_long(0),  # newsp: 0 = go on with a copy of the caller's stack, like fork()
        ctypes.c_long(0),  # parent_tid
        ctypes.c_long(0),  # child_tid (x86_64) / tls (aarch64)
        ctypes.c_long(0),  # tls (x86_64) / child_tid (aarch64)
    )
    if pid == 0:
        try:
            api.PyOS_AfterFork_Child()
        except BaseException:
            if os.getpid() != caller:  # getpid() asks the kernel: glibc does not cache it
                os._exit(1)
            raise  # pragma: no cover - the syscall said child, the kernel says otherwise
        return 0
    errno = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(errno, f"clone(CLONE_PARENT) failed: {os.strerror(errno)}")
    return int(pid)


def set_pdeathsig(sig: int) -> None:
    """``prctl(PR_SET_PDEATHSIG, sig)``: deliver ``sig`` to this process when its parent exits.

    The "parent" is the thread that created this process (for a ``clone_parent()`` child: the
    host thread that started the template). Raises ``OSError`` on failure.
    """
    lib = _lib()
    result = lib.prctl(
        ctypes.c_int(PR_SET_PDEATHSIG),
        ctypes.c_ulong(sig),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")


def detach_fds_except(keep: Iterable[int]) -> None:
    """Point every open file descriptor not in ``keep`` at ``/dev/null``.

    These are descriptors the template's preloaded modules opened (or the template inherited).
    Closing them would free their numbers while Python objects of those modules still hold them: the
    next ``open()`` in the worker could get the same number, and the old object would then read or
    write the wrong file. Pointing them at ``/dev/null`` keeps the numbers taken and shares nothing
    with the template or a sibling: writes vanish, reads see end of file. They stay close-on-exec.
    """
    kept = {fd for fd in keep if fd >= 0}
    try:
        open_fds = sorted(int(name) for name in os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in open_fds:
            if fd in kept or fd == null:
                continue
            try:
                os.dup2(null, fd, inheritable=False)
            except OSError:
                pass  # the directory listing's own descriptor, already closed
    finally:
        os.close(null)
