#!/usr/bin/env bash
# Runs the benchmark harness (issue 6): pyvisor against a raw pipe floor and the Python baselines,
# in one run (see docs/benchmarks.md). Prepares .venv first if it is missing. Arguments are passed
# through, e.g. `scripts/bench.sh --smoke` (tiny, well under a minute; for CI) or
# `scripts/bench.sh --pin split --json bench.json`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup-python.sh >/dev/null
exec cargo run --quiet --release --example bench -- "$@"
