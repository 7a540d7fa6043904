#!/usr/bin/env bash
# Faults and bad input, measured (issue 16): runs tests/reliability.rs at full size —
# the daemon killed with `kill -9` ten times under load, the database paused (SIGSTOP)
# and stopped for 30 s, a ten-minute soak with live channels and alert rules — on the
# MongoDB stand-in and on SecantusDB (the soak once, on the stand-in; stopping the
# database outright only on SecantusDB, the durable one), then prints one markdown
# table of what was tried and what was lost, from the JSON rows the tests write to
# $MONGOPULSE_RELIABILITY_OUT (default target/reliability). Rows other suites left
# there (fuzzing, hostile input: same fields) are printed too. Ends with PASS, or FAIL
# when anything was lost, double-counted or answered wrongly, a process panicked, the
# soak's memory grew (a resident-memory slope over 512 KiB/min after its warm-up, for
# the daemon or the plugin), a scenario did not report, or a test failed.
#
# Sizes can be changed with the variables tests/reliability.rs documents, e.g.
#   MONGOPULSE_RELIABILITY_SOAK_SECS=60 scripts/reliability.sh
# MONGOPULSE_RELIABILITY_PROFILE=release builds optimised (slower to build, closer to
# production); the default is the debug build the test suite uses.
# MONGOPULSE_RELIABILITY_REPORT_ONLY=1 prints the table of the rows already there.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${MONGOPULSE_RELIABILITY_OUT:-$PWD/target/reliability}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export MONGOPULSE_RELIABILITY_OUT=$out

failed=0
if [ -z "${MONGOPULSE_RELIABILITY_REPORT_ONLY:-}" ]; then
  venv=target/standin-venv
  requirements=(tests/standin/requirements.txt tests/plots/requirements.txt)
  if [ -z "${MONGOPULSE_STANDIN_PYTHON:-}" ]; then
    if [ ! -x "$venv/bin/python" ]; then
      echo "==> installing the test MongoDB servers' Python packages into $venv"
      python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check -r "${requirements[0]}" -r "${requirements[1]}"
    fi
    export MONGOPULSE_STANDIN_PYTHON="$PWD/$venv/bin/python"
  fi

  export MONGOPULSE_RELIABILITY_KILLS=${MONGOPULSE_RELIABILITY_KILLS:-10}
  export MONGOPULSE_RELIABILITY_OUTAGE_SECS=${MONGOPULSE_RELIABILITY_OUTAGE_SECS:-30}
  export MONGOPULSE_RELIABILITY_SOAK_SECS=${MONGOPULSE_RELIABILITY_SOAK_SECS:-600}
  export MONGOPULSE_RELIABILITY_SAMPLE_SECS=${MONGOPULSE_RELIABILITY_SAMPLE_SECS:-10}
  profile=()
  if [ "${MONGOPULSE_RELIABILITY_PROFILE:-debug}" = release ]; then
    profile=(--release)
  fi

  # This script's own rows only: other suites' rows stay for the table.
  rm -f "$out"/daemon-kill-9-*.json "$out"/db-paused-*.json "$out"/db-killed-*.json "$out"/soak-*.json
  echo "==> building tests/reliability.rs (${profile[*]:-debug})"
  cargo test --locked "${profile[@]}" --test reliability --no-run || exit 1

  run() {
    local backend=$1
    shift
    echo "==> $backend: $*"
    MONGOPULSE_TEST_BACKEND=$backend cargo test --locked "${profile[@]}" --test reliability -- \
      --test-threads 1 --nocapture "$@" || failed=1
  }
  run standin repeated_kill_9 database_paused soak
  run secantus repeated_kill_9 database_paused database_killed
fi

python3 - "$out" "$failed" <<'EOF'
import json, os, sys

out, failed = sys.argv[1], sys.argv[2] == "1"
rows = []
for name in sorted(os.listdir(out)):
    if name.endswith(".json"):
        try:
            with open(os.path.join(out, name)) as f:
                rows.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"cannot read {name}: {e}")
            failed = True

FLAT_KIB_PER_MIN = 512

def num(r, k):
    v = r.get(k)
    return 0 if v is None else v

def fmt(v, spec="{:.0f}"):
    return "–" if v is None else spec.format(v)

print()
print("| scenario | backend | tried | how many | acknowledged | lost | double-counted (events / rollups) | rollups short | wrong answers | 503 | panics | RSS slope KiB/min (daemon / plugin) | RSS max MiB | fds start→end | p99 ms start→end |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
bad = []
for r in rows:
    key = f"{r.get('scenario')}-{r.get('backend')}"
    for k in ("lost", "double_counted_events", "double_counted_rollups", "lost_rollups", "wrong_answers", "panics"):
        if num(r, k):
            bad.append(f"{key}: {k} = {r[k]}")
    # Flat memory, judged on the soak only (the outages are too short for a slope): the
    # least-squares slope after warm-up, for the daemon and the plugin, under
    # FLAT_KIB_PER_MIN (5 MiB over ten minutes).
    if r.get("scenario") == "soak":
        for k in ("daemon_rss_slope_kib_per_min", "plugin_rss_slope_kib_per_min"):
            if r.get(k) is None or r[k] > FLAT_KIB_PER_MIN:
                bad.append(f"{key}: memory not flat, {k} = {fmt(r.get(k))} (at most {FLAT_KIB_PER_MIN})")
    slope = f"{fmt(r.get('daemon_rss_slope_kib_per_min'))} / {fmt(r.get('plugin_rss_slope_kib_per_min'))}"
    rss = r.get("daemon_rss_max_kib")
    fds = f"{fmt(r.get('fd_start'))}→{fmt(r.get('fd_end'))}"
    p99 = f"{fmt(r.get('p99_start_ms'))}→{fmt(r.get('p99_end_ms'))}"
    tried = f"{fmt(r.get('tried_count'), '{:g}')} {r.get('tried_unit', '')}".strip()
    print(f"| {r.get('scenario')} | {r.get('backend')} | {r.get('tried', '')} | {tried} | "
          f"{num(r, 'events_acknowledged')} | {num(r, 'lost')} | "
          f"{num(r, 'double_counted_events')} / {num(r, 'double_counted_rollups')} | {num(r, 'lost_rollups')} | "
          f"{num(r, 'wrong_answers')} | {num(r, 'answered_503')} | {num(r, 'panics')} | {slope} | "
          f"{fmt(None if rss is None else rss / 1024)} | {fds} | {p99} |")
print()
for r in rows:
    for n in r.get("notes") or []:
        print(f"- {r.get('scenario')}-{r.get('backend')}: {n}")
expected = ["daemon-kill-9-standin", "db-paused-standin", "soak-standin",
            "daemon-kill-9-secantus", "db-paused-secantus", "db-killed-secantus"]
have = {f"{r.get('scenario')}-{r.get('backend')}" for r in rows}
if os.environ.get("MONGOPULSE_RELIABILITY_REPORT_ONLY") is None:
    for e in expected:
        if e not in have:
            bad.append(f"{e}: no row (the scenario did not finish; see its test output above)")
if failed:
    bad.append("a test failed (see its output above)")
print()
if bad:
    print("FAIL: " + "; ".join(bad))
    sys.exit(1)
print(f"PASS: {len(rows)} rows, 0 lost, 0 double-counted, 0 wrong answers, 0 panics, "
      f"soak memory flat (RSS slopes under {FLAT_KIB_PER_MIN} KiB/min)")
EOF
