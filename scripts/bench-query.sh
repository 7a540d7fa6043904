#!/usr/bin/env bash
# Issue 5's benchmark: rows/s from rollup rows to frames (10,000 buckets × 20
# series), and a 24 h / 1 min / 4-dimension query from cache versus from the
# database, as a ratio. Uses MONGODB_URI if set, else starts the stand-in.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/standin.sh
cargo bench --bench query_engine -- --noplot "$@" >&2
python3 - <<'PY'
import json, os
def median_ns(group, name):
    with open(os.path.join("target/criterion", group, name, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]
rows = 10_000 * 20
ns = median_ns("frames", "rows_to_frames")
print(f"{'':44} {'median':>12} {'rate':>18}")
print(f"{'rollup rows → frames (10,000 × 20 series)':44} {ns/1e6:9.1f} ms {rows/(ns/1e9):14,.0f} rows/s")
try:
    db, cache = median_ns("cache", "from_database"), median_ns("cache", "from_cache")
    print(f"{'24 h / 1 min / 4 dims, from the database':44} {db/1e6:9.1f} ms")
    print(f"{'24 h / 1 min / 4 dims, closed buckets cached':44} {cache/1e6:9.1f} ms {db/cache:14.1f}× faster")
except FileNotFoundError:
    print("(cache comparison not run: no MONGODB_URI)")
PY
