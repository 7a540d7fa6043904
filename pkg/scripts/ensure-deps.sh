#!/usr/bin/env bash
# Installs pkg/'s npm packages (exact versions from package-lock.json) when
# node_modules is missing or the lock file changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=node_modules/.mongopulse-lock-stamp
if [ ! -d node_modules ] || ! cmp -s package-lock.json "$stamp"; then
  echo "==> npm ci in pkg/ (about half a minute, ~700 MB)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi
