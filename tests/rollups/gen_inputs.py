#!/usr/bin/env python3
"""Writes the golden-test inputs (deterministic). Each line is one event as
POSTed to /v1/events; lines are in arrival order. Run from this folder:
    python3 gen_inputs.py && python3 make_expected.py
"""
import json, random
from datetime import datetime, timedelta, timezone

COUNTRIES = ["FR", "US", "DE"]
DEVICES = ["mobile", "desktop"]
BROWSERS = ["Chrome", "Safari"]
PAGES = ["/", "/products", "/cart", "/checkout", "/blog", "/about"]


def ts(dt):
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(rng, t, user=None, session=None, country=None, device=None, browser=None, event_type="page_view"):
    user = user if user is not None else f"u{rng.randrange(40)}"
    return {
        "timestamp": ts(t),
        "metadata": {
            "eventType": event_type,
            "source": "web",
            "dimensions": {
                "userId": user,
                "sessionId": session if session is not None else f"s-{user}",
                "deviceType": device or rng.choice(DEVICES),
                "browser": browser or rng.choice(BROWSERS),
                "country": country or rng.choice(COUNTRIES),
            },
        },
        "metrics": {
            "pageLoadTime": round(rng.lognormvariate(7.0, 0.6), 1),
            "timeOnPage": rng.randrange(1, 300),
        },
        "attributes": {"landingPage": rng.choice(PAGES)},
    }


def write(name, events):
    with open(f"inputs/{name}.jsonl", "w") as f:
        for e in events:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")


T = datetime(2024, 12, 9, 14, 0, 0, tzinfo=timezone.utc)

# Out of order, but never more than the 120 s lateness behind the newest event.
rng = random.Random(1)
base = [T + timedelta(seconds=rng.uniform(0, 300)) for _ in range(400)]
base.sort()
arrival = sorted(range(len(base)), key=lambda i: base[i].timestamp() + rng.uniform(0, 90))
write("out_of_order", [event(rng, base[i]) for i in arrival])

# Some events arrive after the lateness: they must be dropped, the rest counted.
rng = random.Random(2)
evs = [event(rng, T + timedelta(seconds=s)) for s in range(0, 600, 3)]
evs.append(event(rng, T + timedelta(seconds=30)))        # 570 s behind: late
evs.append(event(rng, T + timedelta(seconds=455)))       # within lateness (window end 480 > 597-120)
evs.append(event(rng, T + timedelta(seconds=419)))       # window 360-420 ends before 477: late
evs += [event(rng, T + timedelta(seconds=s)) for s in range(600, 700, 5)]
evs.append(event(rng, T + timedelta(seconds=100)))       # late
write("late", evs)

# Minute, hour, day and month boundaries: 2024-01-31 23:58 → 2024-02-01 00:02.
rng = random.Random(3)
start = datetime(2024, 1, 31, 23, 58, 0, tzinfo=timezone.utc)
write("boundaries", [event(rng, start + timedelta(seconds=s)) for s in [0, 59.999, 60, 119.5, 120, 179, 180.001, 239.9] + list(range(1, 240, 7))])

# Empty windows: activity, seven silent minutes, activity again.
rng = random.Random(4)
write("gaps", [event(rng, T + timedelta(seconds=s)) for s in list(range(0, 90, 4)) + list(range(540, 620, 4))])

# Sessions: bounces, long sessions, and one user whose session splits at a 31-minute pause.
rng = random.Random(5)
evs = []
for k in range(12):
    user = f"sess{k}"
    dims = dict(country=COUNTRIES[k % 3], device=DEVICES[k % 2], browser=BROWSERS[k % 2])
    n = 1 if k % 4 == 0 else 2 + k
    t0 = T + timedelta(seconds=13 * k)
    for j in range(n):
        evs.append(event(rng, t0 + timedelta(seconds=40 * j), user=user, session=f"S{k}", **dims))
evs.append(event(rng, T + timedelta(minutes=45), user="sess5", session="S5", country="DE", device="desktop", browser="Safari"))
evs.sort(key=lambda e: e["timestamp"])
write("sessions", evs)
print("inputs written")
