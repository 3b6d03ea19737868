"""Test setup: no network, a throwaway DSPy cache, and the demo package on sys.path.

The environment must be set before dspy (and litellm) are imported, so it is done at
module import time rather than in a fixture.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

_CACHE_DIR = tempfile.mkdtemp(prefix="pyvisor-dspy-cache-")
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"
os.environ["DSPY_CACHEDIR"] = _CACHE_DIR

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/python

import pytest  # noqa: E402


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
