# Sourced by test.sh and train.sh: makes .venv with the project installed, and activates it.
# Re-installs only when pyproject.toml changed since the last install (a stamp records its hash).
# EDGECL_EXTRAS names optional extras to install as well, comma-separated (e.g. EDGECL_EXTRAS=tflm,
# as .ci/run sets it); the stamp records them, so a change of extras re-installs.
set -euo pipefail

EDGECL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGECL_VENV:-$EDGECL_ROOT/.venv}"

find_python() {
    for candidate in "${PYTHON:-}" python3.11 python3 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "bootstrap: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(find_python)"
    echo "bootstrap: creating $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
fi

# The stamp records the dependencies' hash and the checkout the editable install points to: a venv
# shared between checkouts (EDGECL_VENV) must run the code of the checkout that called it.
stamp="$VENV/.edgecl-install-stamp"
extras="test${EDGECL_EXTRAS:+,$EDGECL_EXTRAS}"
case "$extras" in
    *[!A-Za-z0-9,_-]*) echo "bootstrap: EDGECL_EXTRAS must be comma-separated extra names, got '$EDGECL_EXTRAS'" >&2; exit 1 ;;
esac
# Without extras the hash is pyproject.toml's alone (as before extras existed).
want="$( (cat "$EDGECL_ROOT/pyproject.toml"; [ -z "${EDGECL_EXTRAS:-}" ] || echo "extras=$extras") \
    | sha256sum | cut -d' ' -f1) $EDGECL_ROOT"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
    if [ "${have%% *}" = "${want%% *}" ]; then
        echo "bootstrap: pointing $VENV's edgecl at this checkout ($EDGECL_ROOT)" >&2
        "$VENV/bin/python" -m pip install --quiet --no-deps -e "$EDGECL_ROOT" >&2
    else
        echo "bootstrap: installing edgecl and its pinned dependencies into $VENV (first run takes a few minutes)" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
        "$VENV/bin/python" -m pip install --quiet -e "$EDGECL_ROOT[$extras]" >&2
    fi
    echo "$want" > "$stamp"
fi

# shellcheck disable=SC1091
source "$VENV/bin/activate"
