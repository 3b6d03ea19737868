"""The process's standard streams, shared by the worker, the template and its clones."""

import sys

__all__ = ["flush_stdio"]


def flush_stdio() -> None:
    """Flush ``sys.stdout`` and ``sys.stderr``, ignoring streams that are gone or broken."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
