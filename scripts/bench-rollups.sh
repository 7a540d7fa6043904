#!/usr/bin/env bash
# The rollup hot path (issues 4 and 15): our update (ns/event, bytes per open
# bucket, flush cost per bucket) next to a naive exact baseline written the way
# the seed computes, for the same 1,000,000 seed-shaped events, in one run;
# then callgrind instruction counts per event, which a busy machine does not
# change. Goals are printed beside the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench rollup_update -- --noplot "$@" >&2
bench=$(ls -t target/release/deps/rollup_update-* | grep -v '\.d$' | head -1)
counts=target/criterion/rollup-instructions.txt
. scripts/callgrind.sh
ROLLUP_COUNT_EVENTS=100000 callgrind_counts "$bench" ROLLUP_COUNT "$counts" parse ours naive ours_results
# The flush at the benchmark's own bucket size (~139 events, so distinct counts
# pass their exact lists and merges go through HLL unions), counted alone.
flush_count=0
if command -v valgrind > /dev/null; then
  flush_count=$(ROLLUP_COUNT=ours_results ROLLUP_COUNT_EVENTS=1000000 valgrind --tool=callgrind \
    --callgrind-out-file=/dev/null '--toggle-collect=*close_and_flush*' "$bench" 2>&1 \
    | grep -oE 'Collected : [0-9]+' | grep -oE '[0-9]+' || echo 0)
fi
echo "flush_1m $flush_count" >> "$counts"
python3 - "$counts" <<'PY'
import json, os, sys
base = "target/criterion/rollup"
def median_ns(name):
    with open(os.path.join(base, name, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]
mem = json.load(open("target/criterion/rollup-memory.json"))
n = mem["events"]
ou, nu = median_ns("ours_update"), median_ns("naive_update")
orr, nr = median_ns("ours_results"), median_ns("naive_results")
ob, nb = mem["ours_bytes"] / mem["buckets"], mem["naive_bytes"] / mem["naive_buckets"]
per_bucket = n / mem["buckets"]
print(f"{n:,} seed-shaped events over 10 minutes, default spec (eventType, country, deviceType, browser), {mem['buckets']} open minute buckets of ~{per_bucket:.0f} events")
print(f"{'':30} {'ours':>12} {'naive exact':>12} {'naive/ours':>11}   goal")
print(f"{'update, ns/event':30} {ou/n:12.0f} {nu/n:12.0f} {nu/ou:11.2f}   ours <= 150")
print(f"{'flush build, us/bucket':30} {orr/1e3/mem['buckets']:12.1f} {nr/1e3/mem['naive_buckets']:12.1f} {nr/orr:11.2f}   ours <= 15 and <= naive")
print(f"{'flush build, ms for all':30} {orr/1e6:12.1f} {nr/1e6:12.1f} {'':11}   <= 100 (7,200 buckets)")
print(f"{'memory, bytes/open bucket':30} {ob:12,.0f} {nb:12,.0f} {nb/ob:11.2f}   naive/ours >= 10; <= 1,000 at ~100 events")
if "small_bytes" in mem:
    per = mem["small_events"] / mem["small_buckets"]
    print(f"{'memory, bytes/bucket of ~' + format(per, '.0f') + ' ev':30} {mem['small_bytes'] / mem['small_buckets']:12,.0f} {'':12} {'':11}   <= 1,000")
print(f"{'memory, MB total':30} {mem['ours_bytes']/1e6:12.1f} {mem['naive_bytes']/1e6:12.1f}")
counts = dict(l.split() for l in open(sys.argv[1]) if l.strip())
if counts.get("parse"):
    events = 100_000
    p = int(counts["parse"])
    row = lambda k: (int(counts[k]) - p) / events if counts.get(k) and int(counts[k]) else float("nan")
    print(f"\ncallgrind, instructions per event over {events:,} events (parse subtracted):")
    print(f"{'update':30} {row('ours'):12.0f} {row('naive'):12.0f} {row('naive')/row('ours'):11.2f}")
    print(f"{'update + flush build':30} {row('ours_results'):12.0f}")
    if int(counts.get("flush_1m", 0)):
        per_bucket = int(counts["flush_1m"]) / mem["buckets"]
        print(f"\ncallgrind, flush build over all {n:,} events (close every window, build every document):")
        print(f"{'instructions per minute bucket':30} {per_bucket:12,.0f}")
else:
    print("\n(valgrind not found: no instruction counts)")
print("\nours 'flush build' makes every open bucket's stored document (sketches serialised);")
print("naive sorts every bucket's values for p50/p95/p99 and counts its sets.")
PY
