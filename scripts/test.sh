#!/usr/bin/env bash
# Runs every test of Mongo Pulse on a fresh machine: installs what the tests
# need (the MongoDB stand-in's Python packages and matplotlib for the dashboard
# plots in a virtual env, the frontend's
# npm packages in pkg/node_modules, Debian's chromium for the browser test),
# runs the frontend tests, packages the plugin into dist/ (scripts/package.sh),
# starts the brokers the source tests use if they are not answering (scripts/brokers.sh),
# then runs the whole Rust suite (which also tests dist/) on the MongoDB stand-in,
# and every test binary that uses MongoDB (tests/support/mongo.rs's TestMongo) once
# more on SecantusDB. Set MONGODB_URI to run the MongoDB tests once, against that
# real server, instead.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/standin-venv
requirements=(tests/standin/requirements.txt tests/plots/requirements.txt)
stamp=$venv/.requirements
if [ ! -x "$venv/bin/python" ] || ! cat "${requirements[@]}" | cmp -s - "$stamp"; then
  echo "==> installing the test MongoDB servers' Python packages (stand-in, SecantusDB) and matplotlib into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "${requirements[0]}" -r "${requirements[1]}"
  cat "${requirements[@]}" > "$stamp"
fi
export MONGOPULSE_STANDIN_PYTHON="$PWD/$venv/bin/python"
# Every log line and error text of this run is kept here (tests/support/capture.rs) and
# scanned for the suite's secrets at the end (tests/secrets.rs).
export MONGOPULSE_SUITE_OUTPUT="$PWD/target/suite-output"
rm -rf "$MONGOPULSE_SUITE_OUTPUT"
mkdir -p "$MONGOPULSE_SUITE_OUTPUT"

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

echo "==> brokers for tests/sources.rs (scripts/brokers.sh)"
scripts/brokers.sh

echo "==> scripts/package.sh: dist/ for tests/dist_plugin.rs"
scripts/package.sh

# Runs `cargo test "$@"` with its output shown and kept, then prints how many tests
# passed; fails (after the summary) when cargo does.
passed_total=""
failed=0
run_cargo_test() {
  local label=$1
  shift
  local log
  log=$(mktemp)
  local rc=0
  cargo test --locked "$@" 2>&1 | tee "$log" || rc=$?
  local passed
  passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($i ~ /^passed;?$/) n += $(i - 1) } END { print n + 0 }' "$log")
  mv "$log" "$MONGOPULSE_SUITE_OUTPUT/cargo-$(echo "$label" | tr -c 'A-Za-z0-9' '-').log"
  echo "==> $label: $passed tests passed"
  passed_total="$passed_total
    $label: $passed tests passed"
  if [ "$rc" != 0 ]; then
    passed_total="$passed_total, and some FAILED (see above)"
    failed=1
  fi
}

if [ -n "${MONGODB_URI:-}" ]; then
  echo "==> cargo test, MongoDB tests on MONGODB_URI"
  run_cargo_test "MONGODB_URI" --lib --bins --tests
else
  echo "==> cargo test, MongoDB tests on the stand-in (tests/standin/standin.py)"
  MONGOPULSE_TEST_BACKEND=standin run_cargo_test "stand-in (all tests)" --lib --bins --tests
  # Every test binary that starts a TestMongo, again on SecantusDB. Its Python server is
  # slower under many concurrent writers: at most two tests at once there, whatever the
  # machine (tests/support/daemon.rs also gives its inserts a longer write timeout).
  mongo_tests=()
  for f in tests/*.rs; do
    if grep -q 'TestMongo' "$f"; then
      mongo_tests+=(--test "$(basename "$f" .rs)")
    fi
  done
  echo "==> cargo test, MongoDB tests on SecantusDB ($(( ${#mongo_tests[@]} / 2 )) test binaries)"
  # tests/reliability.rs's daemon kill loop and soak exercise the daemon, not the
  # database, and each waits for minutes to become final: they run on the stand-in only
  # here (scripts/reliability.sh runs them on both at full size). Its database outages
  # run on both.
  MONGOPULSE_TEST_BACKEND=secantus run_cargo_test "SecantusDB (MongoDB tests)" \
    "${mongo_tests[@]}" -- --test-threads 2 \
    --skip repeated_kill_9_of_the_daemon --skip soak_with_live_channels
fi
echo "==> tests/secrets.rs: no configured secret in the whole run's logs and error texts"
run_cargo_test "secrets scan" --test secrets -- --ignored
echo "==> cargo test:$passed_total"
exit $failed
