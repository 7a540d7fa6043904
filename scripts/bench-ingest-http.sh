#!/usr/bin/env bash
# Issue 15's whole-path benchmark: a release mongopulsed on loopback, driven over
# HTTP at full speed by wrk (Debian's package; installed if missing and root):
# CONNECTIONS (default 8) keep-alive connections post the same BATCH-event NDJSON
# body (default 100 seed-shaped events) for DURATION seconds (default 20), against
# MONGODB_URI or else the stand-in. Prints events/s stored and acknowledged (the
# daemon's own counter), p50/p99 request latency, the CPU seconds of the daemon
# and of the stand-in MongoDB, and where the daemon's time goes (perf's top symbols, when perf
# is there). The same body posted again is stored again: without ids there is no
# deduplication, so every request does the whole work.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-8}
BATCH=${BATCH:-100}
if ! command -v wrk > /dev/null; then
  [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk > /dev/null \
    || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
fi
cargo build --release --bin mongopulsed >&2
. scripts/standin.sh
work=$(mktemp -d)
daemon=
cleanup() {
  [ -z "$daemon" ] || kill "$daemon" 2>/dev/null || true
  stop_standin
  rm -rf "$work"
}
trap cleanup EXIT
key=bench-key-0123456789

# The body: BATCH events shaped like benches/ingest_decode.rs's, stamped now.
python3 - "$BATCH" > "$work/body.ndjson" <<'PY'
import datetime, json, sys
now = datetime.datetime.now(datetime.timezone.utc)
for i in range(int(sys.argv[1])):
    ts = (now - datetime.timedelta(milliseconds=37 * i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    print(json.dumps({
        "timestamp": ts,
        "metadata": {"eventType": "page_view", "source": "web", "version": "2.1.0",
            "dimensions": {"userId": f"u{i % 5003}", "sessionId": f"session_{i}", "deviceType": ["mobile", "desktop", "tablet"][i % 3],
                "browser": ["Chrome", "Safari", "Firefox", "Edge"][i % 4], "os": "iOS", "country": ["FR", "US", "DE", "GB"][i % 4],
                "city": "Paris", "productId": f"p{i % 113}", "campaignId": "black_friday_2024"}},
        "metrics": {"pageLoadTime": 700 + (i * 7919) % 3000, "timeOnPage": 5 + i % 300, "scrollDepth": round(0.1 + (i % 89) / 100, 2)},
        "attributes": {"referrer": "https://google.com", "landingPage": f"/products/{i % 113}", "utm_source": "google"},
        "geo": {"country": "FR", "city": "Paris"},
    }, separators=(",", ":")))
PY
cat > "$work/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.headers["Authorization"] = "Bearer $key"
local f = assert(io.open("$work/body.ndjson", "rb"))
wrk.body = f:read("*a")
f:close()
EOF

# Minutes stay open for the whole run (the body's timestamps do not move).
MONGOPULSE__MONGODB__URI="$MONGODB_URI" \
MONGOPULSE__MONGODB__DATABASE="bench_ingest_http_$$" \
MONGOPULSE__HTTP__LISTEN=127.0.0.1:0 \
MONGOPULSE_API_KEYS="bench:$key" \
MONGOPULSE__ROLLUPS__IDLE_FINALIZE_SECS=3600 \
MONGOPULSE__LOG__LEVEL=info \
  target/release/mongopulsed 2> "$work/daemon.log" > /dev/null &
daemon=$!
url=
for _ in $(seq 300); do
  url=$(grep -oE 'listening on http://[0-9.:]+' "$work/daemon.log" | head -1 | sed 's/listening on //') || true
  [ -n "$url" ] && curl -fs "$url/readyz" > /dev/null 2>&1 && break
  kill -0 "$daemon" 2> /dev/null || { cat "$work/daemon.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "mongopulsed did not start" >&2; cat "$work/daemon.log" >&2; exit 1; }
echo "daemon at $url (pid $daemon)" >&2

# CPU seconds (user + system) of a process so far, from /proc/PID/stat.
cpu() { awk '{ sub(/.*\) /, ""); print ($12 + $13) / 100 }' "/proc/$1/stat" 2> /dev/null || echo 0; }
accepted() { curl -fs "$url/metrics" | awk '/^mongopulse_ingest_events_accepted_total/ { n += $2 } END { print n + 0 }'; }
mongo_pid=${STANDIN_PID:-}

# Warm up (connections, first inserts, rollup buckets), then the measured run.
wrk -t1 -c"$CONNECTIONS" -d2s -s "$work/post.lua" "$url/v1/events" > /dev/null
a0=$(accepted); d0=$(cpu "$daemon"); m0=$( [ -n "$mongo_pid" ] && cpu "$mongo_pid" || echo 0); t0=$(date +%s.%N)
perf_pid=
if command -v perf > /dev/null; then
  perf record -q -F 499 -e cpu-clock -g -p "$daemon" -o "$work/perf.data" -- sleep "$((DURATION - 2))" 2> /dev/null &
  perf_pid=$!
fi
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/post.lua" "$url/v1/events" > "$work/wrk.txt"
t1=$(date +%s.%N); d1=$(cpu "$daemon"); m1=$( [ -n "$mongo_pid" ] && cpu "$mongo_pid" || echo 0)
sleep 1
a1=$(accepted)
[ -z "$perf_pid" ] || wait "$perf_pid" 2> /dev/null || true
cat "$work/wrk.txt" >&2
perf_top=
if [ -s "$work/perf.data" ]; then
  perf report -q --stdio --no-children --sort dso,symbol -i "$work/perf.data" 2> /dev/null \
    | grep -E '^ +[0-9.]+%' | head -25 > "$work/perf.txt" || true
  perf_top="$work/perf.txt"
fi

python3 - "$work/wrk.txt" "$BATCH" "$CONNECTIONS" "$a0" "$a1" "$t0" "$t1" "$d0" "$d1" "$m0" "$m1" "${MONGODB_URI%%\?*}" "$perf_top" <<'PY'
import re, sys
wrk, batch, conns, a0, a1, t0, t1, d0, d1, m0, m1, mongo, perf = sys.argv[1:]
text = open(wrk).read()
def ms(label):
    m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\b", text, re.M)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
reqs = re.search(r"([\d.]+) requests in", text)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
seconds = float(t1) - float(t0)
events = float(a1) - float(a0)
dcpu, mcpu = float(d1) - float(d0), float(m1) - float(m0)
rate = events / seconds
print(f"whole path: {conns} connections × {batch}-event NDJSON bodies, {seconds:.1f} s, MongoDB {mongo}")
print(f"{'':38} {'measured':>14}   goal")
print(f"{'events/s stored and acknowledged':38} {rate:14,.0f}   (none set; measured)")
print(f"{'requests (non-2xx)':38} {reqs.group(1) if reqs else '?':>14}   ({non2xx.group(1) if non2xx else 0} non-2xx; all 2xx)")
print(f"{'request latency p50, ms':38} {ms('50'):14.2f}")
print(f"{'request latency p99, ms':38} {ms('99'):14.2f}")
if errors:
    print(f"socket errors: {errors.group(1)}")
print(f"\nwhere the time goes (CPU seconds over the run; 2 cores = {2 * seconds:.0f} s available):")
print(f"{'mongopulsed':38} {dcpu:8.1f} s  {dcpu / max(events, 1) * 1e6:8.1f} µs/event")
if float(m1) > 0:
    print(f"{'MongoDB stand-in (Python)':38} {mcpu:8.1f} s  {mcpu / max(events, 1) * 1e6:8.1f} µs/event")
if perf:
    print("\nmongopulsed's top symbols (perf record -F 499, self time):")
    for line in open(perf):
        print("  " + line.rstrip()[:110])
PY
