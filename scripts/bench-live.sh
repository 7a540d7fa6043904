#!/usr/bin/env bash
# Issue 6's benchmark: delay from the daemon's answer to a POST to the first
# live frame holding the event, at the Grafana-protocol harness: p50/p95/p99
# over EVENTS (default 1000) events sent at RATE per second (default 50).
# FLUSH_MS sets the daemon's rollups.flush_interval_ms (default: 250, as shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/standin-venv
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -r tests/standin/requirements.txt; }
export MONGOPULSE_STANDIN_PYTHON="$PWD/$venv/bin/python"
cargo build --bins -q
cargo bench --bench live_latency -q 2>/dev/null | grep -v '^$' || cargo bench --bench live_latency
