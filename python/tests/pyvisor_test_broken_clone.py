"""Preloaded by a template in tests: every forked child then fails before its handshake byte."""

from pyvisor_worker import clone


def _broken(sig: int) -> None:
    raise OSError(1, "set_pdeathsig broken by pyvisor_test_broken_clone")


clone.set_pdeathsig = _broken
