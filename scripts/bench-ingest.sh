#!/usr/bin/env bash
# Issues 3 and 15's benchmark: events/s per core for decode + validate of a
# realistic NDJSON batch, next to parse-only into a generic value with the
# fastest parsers there are (sonic-rs, simd-json) and with serde_json::Value,
# and the ratio to the fastest; then callgrind instruction counts per event,
# which a busy machine does not change. Runs benches/ingest_decode.rs (criterion)
# and prints medians from one run, goals beside the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench ingest_decode -- --noplot "$@" >&2
bench=$(ls -t target/release/deps/ingest_decode-* | grep -v '\.d$' | head -1)
counts=target/criterion/ingest-instructions.txt
. scripts/callgrind.sh
INGEST_COUNT_PASSES=10 callgrind_counts "$bench" INGEST_COUNT "$counts" \
  build parse_sonic parse_simd parse_serde decode decode_bson
python3 - "$counts" <<'PY'
import json, os, sys
events = 10_000
base = "target/criterion/ingest"
def median_ns(name):
    with open(os.path.join(base, name, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]
parsers = [
    ("parse only → sonic_rs::Value", "parse_only_sonic_rs_value", "parse_sonic"),
    ("parse only → simd_json BorrowedValue", "parse_only_simd_json_borrowed", "parse_simd"),
    ("parse only → serde_json::Value", "parse_only_serde_json_value", "parse_serde"),
]
ours = [
    ("decode + validate (mongopulse)", "decode_and_validate", "decode"),
    ("decode + validate + to BSON", "decode_validate_to_bson", "decode_bson"),
]
medians = {name: median_ns(name) for _, name, _ in parsers + ours}
fastest_label, fastest, fastest_count = min(parsers, key=lambda p: medians[p[1]])
fast_ns = medians[fastest]
goals = {"decode_and_validate": "≥ 1,000,000 events/s per core"}
print(f"batch of {events} seed-shaped events (~500 bytes each), one core; ratio = fastest parse-only median / this median")
print(f"{'stage':38} {'median/batch':>13} {'events/s (1 core)':>18} {'× fastest parse':>16}   goal")
for label, name, _ in parsers + ours:
    ns = medians[name]
    rate = events / (ns / 1e9)
    goal = goals.get(name, "")
    if goal:
        goal += (": met" if rate >= 1_000_000 else ": NOT met") + "; issue 3: ≥ 0.5× parse-only" + (
            ": met" if fast_ns / ns >= 0.5 else ": NOT met against the fastest")
    print(f"{label:38} {ns/1e6:10.2f} ms {rate:18,.0f} {fast_ns/ns:16.2f}   {goal}")
print(f"fastest parse-only here: {fastest_label.split('→ ')[1]}")

counts = dict(l.split() for l in open(sys.argv[1]) if l.strip())
if counts.get("build") and int(counts["build"]):
    n = events * 10
    b = int(counts["build"])
    per = lambda k: (int(counts[k]) - b) / n if int(counts.get(k, 0)) else float("nan")
    print(f"\ncallgrind, instructions per event over {n:,} events (making the batch subtracted):")
    print(f"{'stage':38} {'instr/event':>13} {'× fastest parse':>16}")
    ref = per(fastest_count)
    for label, _, key in parsers + ours:
        print(f"{label:38} {per(key):13,.0f} {ref/per(key):16.2f}")
else:
    print("\n(valgrind not found: no instruction counts)")
PY
