"""Preloaded by a template in tests: starts a thread at import, which makes forking unsafe."""

import threading

STOP = threading.Event()
"""Set it to let the thread end (nobody does: the template refuses to serve and exits)."""

SLEEPER = threading.Thread(target=STOP.wait, name="pyvisor-test-sleeper", daemon=False)
SLEEPER.start()
