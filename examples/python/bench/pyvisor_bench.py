"""Fixture module of the benchmark harness (``examples/bench/``).

It sits on the pool's ``python_path`` (and on the floor worker's ``PYTHONPATH``) so both sides
call exactly the same function. Keep it trivial: the benchmark measures the transport, not Python.
"""


def echo(x):
    """Return the argument unchanged (1 MiB bytes, 8 MiB ndarray round trips)."""
    return x


def noop():
    """Do nothing (used by the multiprocessing baselines for start-to-ready)."""
    return None
