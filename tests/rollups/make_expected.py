#!/usr/bin/env python3
"""Computes the expected rollups of each inputs/*.jsonl, independently of the
Rust code: plain Python over the raw events, exact values. The Rust golden test
(tests/rollup_golden.rs) compares the engine's output with these: counts, sums,
minimum and maximum exactly; distinct counts and quantiles within the sketches'
stated errors; top-K exactly (inputs have fewer values than the sketch map).

Rules simulated (README, "Rollups"): an event is late when the end of its
minute is at or before the watermark = newest event time seen before it − 120 s;
late events are not stored nor counted. Buckets are UTC. Sessions: a session's
events are at most 1,800 s apart; it is counted in the minute of its last event.
"""
import glob, json, math, os
from collections import defaultdict
from datetime import datetime, timezone

LATENESS_MS = 120_000
GAP_MS = 1_800_000
DIMS = ["eventType", "country", "deviceType", "browser"]
QUANTILES = ["pageLoadTime", "timeOnPage"]


def ms(text):
    return int(round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000))


def iso(t):
    return datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def bucket(level, t):
    if level == "minute":
        return t - t % 60_000
    if level == "hour":
        return t - t % 3_600_000
    if level == "day":
        return t - t % 86_400_000
    d = datetime.fromtimestamp(t / 1000, tz=timezone.utc)
    return int(datetime(d.year, d.month, 1, tzinfo=timezone.utc).timestamp() * 1000)


def dims_of(e):
    d = e["metadata"].get("dimensions", {})
    return tuple(e["metadata"]["eventType"] if k == "eventType" else d.get(k) for k in DIMS)


def summarise(events):
    out = {"count": len(events), "metrics": {}, "distinct": {}, "quantiles": {}, "topK": {}}
    names = sorted({m for e in events for m in e.get("metrics", {})})
    for m in names:
        vals = [float(e["metrics"][m]) for e in events if m in e.get("metrics", {})]
        out["metrics"][m] = {"sum": math.fsum(vals), "min": min(vals), "max": max(vals), "count": len(vals)}
    for key in ["userId", "sessionId"]:
        out["distinct"][key] = len({e["metadata"]["dimensions"][key] for e in events if key in e["metadata"].get("dimensions", {})})
    for m in QUANTILES:
        vals = sorted(float(e["metrics"][m]) for e in events if m in e.get("metrics", {}))
        if vals:
            # The rank convention of DDSketch: the value at rank floor(q * (n - 1)).
            out["quantiles"][m] = {str(q): vals[int(math.floor(q * (len(vals) - 1)))] for q in (0.5, 0.95, 0.99)}
    counts = defaultdict(int)
    for e in events:
        page = e.get("attributes", {}).get("landingPage")
        if page is not None:
            counts[page] += 1
    out["topK"]["landingPage"] = sorted(([v, c] for v, c in counts.items()), key=lambda r: (-r[1], r[0]))[:10]
    return out


def sessions_of(events):
    by_session = defaultdict(list)
    for e in events:
        sid = e["metadata"]["dimensions"].get("sessionId")
        if sid is not None:
            by_session[sid].append(e)
    buckets = defaultdict(lambda: {"sessions": 0, "durationMsSum": 0, "events": 0, "bounces": 0})
    for sid, evs in by_session.items():
        first_dims = evs[0]  # dimensions of the first event to arrive
        evs = sorted(evs, key=lambda e: ms(e["timestamp"]))
        groups, current = [], [evs[0]]
        for e in evs[1:]:
            if ms(e["timestamp"]) - ms(current[-1]["timestamp"]) > GAP_MS:
                groups.append(current)
                current = [e]
            else:
                current.append(e)
        groups.append(current)
        for g in groups:
            first, last = ms(g[0]["timestamp"]), ms(g[-1]["timestamp"])
            d = (first_dims if g is groups[0] else g[0])["metadata"]["dimensions"]
            key = (bucket("minute", last), tuple(d.get(k) for k in DIMS[1:]))
            b = buckets[key]
            b["sessions"] += 1
            b["durationMsSum"] += last - first
            b["events"] += len(g)
            b["bounces"] += len(g) == 1
    return [
        {"timestamp": iso(t), "dimensions": dict(zip(DIMS[1:], dims)), **v}
        for (t, dims), v in sorted(buckets.items(), key=lambda kv: (kv[0][0], json.dumps(kv[0][1])))
    ]


def expected(path):
    events = [json.loads(line) for line in open(path) if line.strip()]
    kept, late, newest = [], [], None
    for i, e in enumerate(events):
        t = ms(e["timestamp"])
        watermark = None if newest is None else newest - LATENESS_MS
        if watermark is not None and bucket("minute", t) + 60_000 <= watermark:
            late.append(i)
            continue
        kept.append(e)
        newest = t if newest is None else max(newest, t)
    out = {"lateness_secs": LATENESS_MS // 1000, "gap_secs": GAP_MS // 1000, "late": late}
    for level in ["minute", "hour", "day", "month"]:
        groups = defaultdict(list)
        for e in kept:
            groups[(bucket(level, ms(e["timestamp"])), dims_of(e))].append(e)
        out[level] = [
            {"timestamp": iso(t), "dimensions": dict(zip(DIMS, dims)), **summarise(evs)}
            for (t, dims), evs in sorted(groups.items(), key=lambda kv: (kv[0][0], json.dumps(kv[0][1])))
        ]
    out["sessions"] = sessions_of(kept)
    return out


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "inputs", "*.jsonl"))):
        name = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(here, "expected", name + ".json"), "w") as f:
            json.dump(expected(path), f, indent=1, sort_keys=True)
            f.write("\n")
        print("wrote expected/" + name + ".json")
