"""pyvisor demo helpers: a deterministic offline LM for DSPy and LM selection.

Importing the package makes LiteLLM use its bundled model cost map instead of fetching
one from GitHub (LITELLM_LOCAL_MODEL_COST_MAP), unless the variable is already set.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from .lm_select import describe_lm, make_lm, select_model  # noqa: E402
from .offline_lm import OfflineRulesEngine, is_offline, offline_lm  # noqa: E402

__all__ = ["OfflineRulesEngine", "describe_lm", "is_offline", "make_lm", "offline_lm", "select_model"]
