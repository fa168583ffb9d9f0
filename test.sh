#!/usr/bin/env bash
# Sets up .venv (see scripts/bootstrap.sh) and runs the test suite; arguments go to pytest.
# The default run skips tests marked slow; `./test.sh -m slow` runs only those, `./test.sh -m ''` all.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
exec python -m pytest "$@"
