"""The worker's C accelerator, ``pyvisor_worker._plainc`` (``docs/decisions.md``, "Worker C
accelerator"); everything else about the package is in ``pyproject.toml``.

The extension is optional: without a compiler or Python headers the install still succeeds (the
build only warns) and workers run the pure-Python path. ``pip install -e python`` (what
``scripts/setup-python.sh`` runs) builds it in place, next to the package's Python files, so a
worker started with ``PYTHONPATH=python`` finds it as well.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyvisor_worker._plainc",
            sources=["pyvisor_worker/_plainc.c"],
            optional=True,
        ),
    ],
)
