#!/usr/bin/env bash
# Issue 4's benchmark: our rollup update (ns/event, bytes per open bucket)
# next to a naive exact baseline written the way the seed computes, for the
# same 1,000,000 seed-shaped events, in one run; with time and memory ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench rollup_update -- --noplot "$@" >&2
python3 - <<'PY'
import json, os
base = "target/criterion/rollup"
def median_ns(name):
    with open(os.path.join(base, name, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]
mem = json.load(open("target/criterion/rollup-memory.json"))
n = mem["events"]
ou, nu = median_ns("ours_update"), median_ns("naive_update")
orr, nr = median_ns("ours_results"), median_ns("naive_results")
ob, nb = mem["ours_bytes"] / mem["buckets"], mem["naive_bytes"] / mem["naive_buckets"]
print(f"{n:,} seed-shaped events over 10 minutes, default spec (eventType, country, deviceType, browser), {mem['buckets']} open minute buckets")
print(f"{'':28} {'ours':>14} {'naive exact':>14} {'naive / ours':>13}")
print(f"{'update, ns/event':28} {ou/n:14.0f} {nu/n:14.0f} {nu/ou:13.2f}")
print(f"{'results at flush, ms total':28} {orr/1e6:14.1f} {nr/1e6:14.1f} {nr/orr:13.2f}")
print(f"{'memory, bytes/open bucket':28} {ob:14,.0f} {nb:14,.0f} {nb/ob:13.2f}")
print(f"{'memory, MB total':28} {mem['ours_bytes']/1e6:14.1f} {mem['naive_bytes']/1e6:14.1f}")
print("\ngoal: ≤ 200 ns/event on one core and ≥ 10× less memory than the baseline")
print("ours 'results at flush' builds every bucket's stored document (sketches serialised);")
print("naive sorts every bucket's values for p50/p95/p99 and counts its sets.")
PY
