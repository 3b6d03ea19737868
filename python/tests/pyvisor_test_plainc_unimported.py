"""Imported only by ``test_plainc.py``'s test of a module not imported yet: the C accelerator
declines it and the Python path imports it."""

IMPORTS = []
IMPORTS.append(__name__)


def answer():
    return 42
