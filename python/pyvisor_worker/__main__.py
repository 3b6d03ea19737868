"""Entry point: ``python -m pyvisor_worker``."""

import os
import sys
import threading

from .worker import WATCHDOG_SECONDS, main


def _exit(status: int) -> None:
    # Interpreter shutdown waits for non-daemon threads that user code may have left running;
    # do not let them keep a worker alive after it was told to stop.
    guard = threading.Timer(WATCHDOG_SECONDS, os._exit, args=(status,))
    guard.daemon = True
    guard.start()
    sys.exit(status)


if __name__ == "__main__":
    _exit(main())
