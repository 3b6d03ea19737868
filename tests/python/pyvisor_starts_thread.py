"""A module that starts a thread when imported: a template must refuse to fork after it."""

import threading

_stop = threading.Event()
_thread = threading.Thread(target=_stop.wait, name="started-by-import", daemon=True)
_thread.start()
