#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need (Debian packages
# for the real servers, the Python test extras), then lint, format check, the documentation
# (warnings are errors) and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .ci/install-deps ]; then
    .ci/install-deps
fi
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
ruff check .
ruff format --check .
sphinx-build -q -W -b html docs docs/_build/html
python3 -m pytest "$@"
