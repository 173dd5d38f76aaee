#!/usr/bin/env bash
# The serve tests (tests/serve), in a virtual environment of their own: PyTriton pins numpy<2
# while the main environment has numpy 2. Called from .ci/run after the main install.
#   1. the MAIN environment (torch, export) builds the fixture bundle and reference samples;
#   2. .venv-serve gets mmedge[serve] (no torch) and pytest;
#   3. pytest tests/serve runs there, with MMEDGE_SERVE_FIXTURE pointing at step 1's output.
# Servers bind 127.0.0.1 only. Env: MAIN_PYTHON (default python), SERVE_VENV (default .venv-serve).
set -uo pipefail
cd "$(dirname "$0")/.."
main_python=${MAIN_PYTHON:-python}
venv=${SERVE_VENV:-.venv-serve}
fixture=$(mktemp -d "${TMPDIR:-/tmp}/mmedge-serve-fixture.XXXXXX")
trap 'rm -rf "$fixture"' EXIT
start=$SECONDS
"$main_python" tests/serve/make_fixture.py "$fixture" || exit 1
if [ ! -x "$venv/bin/python" ]; then
  "$main_python" -m venv "$venv" || exit 1
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[serve]" "pytest>=8" || exit 1
echo "serve environment ready in $((SECONDS - start)) s"
MMEDGE_SERVE_FIXTURE="$fixture" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/serve
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "serve tests: pytest collected no tests: treating as a failure"
  exit 1
fi
echo "serve tests finished in $((SECONDS - start)) s (rc $rc)"
exit "$rc"
