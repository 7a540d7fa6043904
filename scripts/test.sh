#!/usr/bin/env bash
# Runs every test of Mongo Pulse on a fresh machine: installs what the tests
# need (the MongoDB stand-in's Python packages in a virtual env), then runs the
# whole suite. Set MONGODB_URI to run the MongoDB tests against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/standin-venv
requirements=tests/standin/requirements.txt
stamp=$venv/.requirements
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
  echo "==> installing the MongoDB stand-in's Python packages into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
export MONGOPULSE_STANDIN_PYTHON="$PWD/$venv/bin/python"

echo "==> cargo test"
cargo test --all-targets --locked
