"""A module that fails to import, as a broken dependency would."""

raise RuntimeError("boom at import: model weights missing")
