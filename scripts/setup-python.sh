#!/usr/bin/env bash
# Creates (or refreshes) the project's Python environment in .venv: the pyvisor worker package
# from python/ and the test dependencies, all from PyPI. Idempotent; safe on a fresh machine.
#
#   scripts/setup-python.sh            # worker package + pytest
#
# The base interpreter is $PYVISOR_BASE_PYTHON, else pyenv's CPython 3.11, else /usr/bin/python3
# (never the pyenv shim on PATH, which is slow to start).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"

find_base() {
    if [ -n "${PYVISOR_BASE_PYTHON:-}" ]; then echo "$PYVISOR_BASE_PYTHON"; return; fi
    for candidate in "$HOME"/.pyenv/versions/3.11*/bin/python3 /usr/local/bin/python3.11 /usr/bin/python3.11 /usr/bin/python3; do
        if [ -x "$candidate" ]; then echo "$candidate"; return; fi
    done
    echo "no Python 3 interpreter found; set PYVISOR_BASE_PYTHON" >&2
    exit 1
}

if [ ! -x "$venv/bin/python" ]; then
    base="$(find_base)"
    echo "creating $venv with $base"
    if ! "$base" -m venv "$venv" 2>/dev/null; then
        # Debian's interpreter needs its venv package.
        rm -rf "$venv"
        if command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        "$base" -m venv "$venv"
    fi
fi

stamp="$venv/.pyvisor-installed"
# The C accelerator's source is part of the stamp: an edit rebuilds it (in place, next to the
# package's Python files, where a worker started with PYTHONPATH=python/ finds it too).
want="$(cat "$root/python/pyproject.toml" "$root/python/setup.py" "$root/scripts/setup-python.sh" \
    "$root/python/pyvisor_worker/_plainc.c" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root/python[dev]"
    echo "$want" > "$stamp"
fi
"$venv/bin/python" -c "import msgpack, pyvisor_worker, pytest" \
    || { echo "the Python environment in $venv is incomplete" >&2; exit 1; }
echo "python environment ready: $venv/bin/python"
