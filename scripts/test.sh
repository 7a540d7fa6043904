#!/usr/bin/env bash
# Runs every test of Mongo Pulse on a fresh machine: installs what the tests
# need (the MongoDB stand-in's Python packages and matplotlib for the dashboard
# plots in a virtual env, the frontend's
# npm packages in pkg/node_modules, Debian's chromium for the browser test),
# runs the frontend tests, packages the plugin into dist/ (scripts/package.sh),
# then runs the whole Rust suite, which also tests dist/. Set MONGODB_URI to run
# the MongoDB tests against a real server.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/standin-venv
requirements=(tests/standin/requirements.txt tests/plots/requirements.txt)
stamp=$venv/.requirements
if [ ! -x "$venv/bin/python" ] || ! cat "${requirements[@]}" | cmp -s - "$stamp"; then
  echo "==> installing the MongoDB stand-in's Python packages and matplotlib into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "${requirements[0]}" -r "${requirements[1]}"
  cat "${requirements[@]}" > "$stamp"
fi
export MONGOPULSE_STANDIN_PYTHON="$PWD/$venv/bin/python"

# ---- frontend (pkg/) ----------------------------------------------------------
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian's chromium for the browser test"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o Dpkg::Use-Pty=0 chromium > /dev/null
fi
pkg/scripts/ensure-deps.sh
echo "==> frontend: type check"
(cd pkg && npx tsc --noEmit)
echo "==> frontend: component tests (vitest)"
(cd pkg && npx vitest run)
echo "==> frontend: browser test (headless chromium)"
(cd pkg && node browser/screenshots.mjs)

echo "==> scripts/package.sh: dist/ for tests/dist_plugin.rs"
scripts/package.sh

echo "==> cargo test"
cargo test --locked --lib --bins --tests
