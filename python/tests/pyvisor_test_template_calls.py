"""Functions the template tests call inside forked workers (this directory is on PYTHONPATH)."""

import atexit
import os
import random
import sys
from typing import Any, Dict, List


def identity() -> Dict[str, Any]:
    """Who this worker is: pids, process group and the environment the template set."""
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0),
        "fd_in": int(os.environ["PYVISOR_FD_IN"]),
        "fd_out": int(os.environ["PYVISOR_FD_OUT"]),
        "slot": os.environ["PYVISOR_SLOT"],
        "generation": os.environ["PYVISOR_GENERATION"],
    }


def randoms() -> List[Any]:
    """One draw from ``random`` and, when the template preloaded them, ``numpy.random`` and
    OpenSSL."""
    numpy_random = sys.modules.get("numpy.random")
    drawn: List[Any] = [random.random()]
    if numpy_random is not None:
        drawn.append(float(numpy_random.random()))
    ssl = sys.modules.get("ssl")
    if ssl is not None:
        drawn.append(ssl.RAND_bytes(16).hex())
    return drawn


def say(out: str, err: str) -> bool:
    """Print ``out`` to stdout and ``err`` to stderr."""
    print(out)
    print(err, file=sys.stderr)
    return True


def say_at_exit(text: str) -> bool:
    """Print ``text`` to stdout when the worker exits (an ``atexit`` handler)."""
    atexit.register(print, text)
    return True


def loaded(name: str) -> bool:
    """Whether the module ``name`` is imported in this worker."""
    return name in sys.modules
