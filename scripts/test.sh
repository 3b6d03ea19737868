#!/usr/bin/env bash
# Runs every test: the Rust unit, integration and doc tests (real Python workers) and the worker
# package's pytest suite. Prepares the Python environment first if it is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup-python.sh
cargo test --all-targets
cargo test --doc
.venv/bin/python -m pytest -q python/tests
.venv/bin/python -m pytest -q examples/python/tests
# The benchmark harness in its smoke mode (tiny sizes; the numbers mean nothing): keeps it
# compiling and working. Its report goes to target/bench-smoke.md.
scripts/bench.sh --smoke > target/bench-smoke.md
