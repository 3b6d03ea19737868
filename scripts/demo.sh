#!/usr/bin/env bash
# Runs the flagship demo (multi-pool DSPy + GEPA, offline by default). Prepares .venv first if it
# is missing. Pass --no-fault to skip the injected worker crash.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup-python.sh >/dev/null
exec cargo run --quiet --example flagship_multi_pool_gepa -- "$@"
