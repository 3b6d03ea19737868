"""Processes forked by worker code die with the worker.

The host starts every worker with ``PR_SET_PDEATHSIG(SIGKILL)``, so a worker dies with its host.
That setting is not inherited across ``fork``: a ``multiprocessing`` child of a worker would
outlive a SIGKILLed host (nobody is left to kill the worker's process group). ``install`` registers
an at-fork hook that gives every child forked from Python code the same lifeline to its parent,
so the whole tree goes down together. Children started by ``subprocess`` (fork + exec in C) are not
covered; the host's process-group kill covers them while the host is alive.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


_parent = 0
"""The pid of the process that is forking (set just before each fork)."""


def _before_fork() -> None:
    global _parent
    _parent = os.getpid()


def _after_fork_in_child() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except Exception:  # no libc/prctl: nothing more can be done
        return
    if os.getppid() != _parent:  # the parent died before the prctl: nobody would kill us
        os._exit(1)


def install() -> None:
    """Give every child this process forks a parent-death signal (Linux only)."""
    if sys.platform.startswith("linux"):
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
