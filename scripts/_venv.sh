# Sourced by the scripts here: make .venv with healthmon and its dev tools installed.
# Needs only python3 (3.11 or newer); set PYTHON to use another interpreter.
#
# pip runs only when it has something to do: on the first run, and after pyproject.toml
# changed (the package is installed editable, so changes under src/ need no reinstall).
# A stamp in .venv holds the hash of the pyproject.toml last installed; it is written
# only after pip succeeded, so a failed or interrupted install is tried again next time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "healthmon needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $("$PYTHON" --version) (first run only, a few seconds)" >&2
    if ! "$PYTHON" -m venv .venv; then
        rm -rf .venv  # half made: the next run starts over rather than trust it
        echo "could not create .venv with '$PYTHON -m venv'" \
            "(on Debian or Ubuntu: apt install python3-venv)" >&2
        exit 1
    fi
fi
if ! .venv/bin/python -c '' 2>/dev/null; then
    echo ".venv is broken: its python does not run (was its interpreter removed?);" \
        "remove it (rm -rf .venv) and run this again" >&2
    exit 1
fi
stamp=.venv/healthmon-installed.sha256
wanted="$(.venv/bin/python -c 'import hashlib, sys
print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
# The second test catches a .venv whose healthmon was uninstalled behind the stamp's back.
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] \
    || ! .venv/bin/python -c 'import importlib.util, sys
sys.exit(importlib.util.find_spec("healthmon") is None)'; then
    rm -f "$stamp"
    echo "== installing healthmon and its dev tools into .venv (pip install -e '.[dev]')," \
        "as pyproject.toml is new or changed: usually 20 s to a minute the first time, a few seconds" \
        "after a change; pip's progress follows" >&2
    started=$SECONDS
    .venv/bin/python -m pip install --disable-pip-version-check -e '.[dev]' >&2
    echo "$wanted" >"$stamp.tmp" && mv "$stamp.tmp" "$stamp"
    echo "== installed in $((SECONDS - started)) s; later runs skip this" \
        "until pyproject.toml changes" >&2
fi
