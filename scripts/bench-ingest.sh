#!/usr/bin/env bash
# Issue 3's benchmark: events/s per core for decode + validate of a realistic
# NDJSON batch, next to parse-only into serde_json::Value, and the ratio.
# Runs benches/ingest_decode.rs (criterion) and prints medians from one run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench ingest_decode -- --noplot "$@" >&2
python3 - <<'PY'
import json, os
events = 10_000
base = "target/criterion/ingest"
def median_ns(name):
    with open(os.path.join(base, name, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]
rows = [
    ("parse only → serde_json::Value", "parse_only_serde_json_value"),
    ("decode + validate (mongopulse)", "decode_and_validate"),
    ("decode + validate + to BSON", "decode_validate_to_bson"),
]
parse = median_ns("parse_only_serde_json_value")
print(f"{'stage':34} {'median/batch':>13} {'events/s (1 core)':>18} {'× parse-only':>13}")
for label, name in rows:
    ns = median_ns(name)
    print(f"{label:34} {ns/1e6:10.2f} ms {events/(ns/1e9):18,.0f} {parse/ns:13.2f}")
print(f"\nbatch of {events} seed-shaped events (~400 bytes each); goal: decode + validate ≥ 0.5× parse-only and ≥ 500,000 events/s per core")
PY
