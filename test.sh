#!/usr/bin/env bash
# Sets up .venv (see scripts/bootstrap.sh) and runs the test suite; arguments go to pytest.
# The default run skips tests marked slow; `./test.sh -m slow` runs only those, `./test.sh -m ''` all.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
# The habits that keep the code readable: lint (pyproject.toml [tool.ruff]) and a strict type check
# of the torch-free device runtime ([tool.mypy]) before the tests.
python -m ruff check --quiet .
python -m mypy
exec python -m pytest "$@"
