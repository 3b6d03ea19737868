"""Preloaded by tests that need a worker to stay "starting" until they say so.

At import (before the worker's handshake), while the file named by ``PYVISOR_TEST_START_HOLD``
exists, the import blocks; a test removes the file to let the worker finish its start. With
``PYVISOR_TEST_START_HOLD_SLOT`` set, only the worker of that slot is held. A held worker writes
its pid to ``<hold>.held`` first, so that a test can wait until a worker is held.
"""

import os
import time

_HOLD = os.environ.get("PYVISOR_TEST_START_HOLD")
_SLOT = os.environ.get("PYVISOR_TEST_START_HOLD_SLOT")


def _hold() -> None:
    if not _HOLD or not os.path.exists(_HOLD):
        return
    if _SLOT is not None and os.environ.get("PYVISOR_SLOT") != _SLOT:
        return
    with open(_HOLD + ".held", "w") as f:
        f.write(str(os.getpid()))
    end = time.monotonic() + 60.0  # a failure guard: the pool's startup timeout acts first
    while os.path.exists(_HOLD) and time.monotonic() < end:
        time.sleep(0.005)


_hold()
