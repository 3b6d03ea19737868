"""Imported by the worker through PYVISOR_PRELOAD in tests."""

PRELOADED = True
