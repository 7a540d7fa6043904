#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, fuzz/corpus/<target>/, from the
inputs the tests and the provisioning files already use: the query fixtures, the
dashboards' panel targets and template variables, the alert rules files, the
README's configuration examples and the test suite's event shapes.

Run it again after changing those inputs (`python3 fuzz/seed-corpus.py`); it
replaces the files it names `seed-*` and leaves the fuzzer's minimised finds
(other names) alone. Needs the `zstd` command for the one zstd seed.
"""

import copy
import gzip
import hashlib
import json
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (folder / f"seed-{name}").write_bytes(data)


def clear_seeds():
    for f in CORPUS.glob("*/seed-*"):
        f.unlink()


def panel_targets():
    """Every panel target of the provisioned dashboards, and their variables."""
    targets, variables = [], []
    for path in sorted((ROOT / "provisioning/dashboards/json").glob("*.json")):
        board = json.loads(path.read_text())

        def walk(panels):
            for p in panels:
                yield p
                yield from walk(p.get("panels", []))

        for panel in walk(board.get("panels", [])):
            targets.extend(panel.get("targets", []))
        for v in board.get("templating", {}).get("list", []):
            if isinstance(v.get("query"), dict):
                variables.append(v["query"])
    return targets, variables


def unique(items):
    seen, out = set(), []
    for i in items:
        key = json.dumps(i, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


# ---- event_body: the shapes of tests/support/daemon.rs's seed_event and of
# src/ingest/validate.rs's tests (clock of fuzz/src/lib.rs: 2024-12-09T14:31:00Z).
SEED_EVENT = {
    "timestamp": "2024-12-09T14:30:15.234Z",
    "metadata": {
        "eventType": "page_view",
        "source": "web",
        "version": "2.1.0",
        "dimensions": {
            "userId": "u1", "sessionId": "s1", "deviceType": "mobile", "browser": "Chrome",
            "os": "iOS", "country": "FR", "city": "Paris", "campaignId": None,
        },
    },
    "metrics": {"pageLoadTime": 1247, "timeOnPage": 45, "scrollDepth": 0.78},
    "attributes": {"referrer": "https://google.com", "landingPage": "/products", "exitPage": None},
    "geo": {"country": "FR", "coordinates": {"type": "Point", "coordinates": [2.35, 48.85]}},
}


def events():
    one = json.dumps(SEED_EVENT)
    write("event_body", "event.json", one)
    write("event_body", "epoch-millis.json",
          '{"timestamp": 1733754615234, "metadata": {"eventType": "click"}}')
    batch = []
    for seq in range(3):
        e = copy.deepcopy(SEED_EVENT)
        e["metadata"]["dimensions"]["userId"] = f"u{seq}"
        e["attributes"]["seq"] = seq
        batch.append(e)
    write("event_body", "array.json", json.dumps(batch))
    ndjson = "\n".join(json.dumps(e) for e in batch) + "\n"
    write("event_body", "batch.ndjson", ndjson)
    write("event_body", "batch.ndjson.gz", gzip.compress(ndjson.encode(), mtime=0))
    zstd = subprocess.run(["zstd", "-q", "-c", "-3"], input=one.encode(),
                          capture_output=True, check=True).stdout
    write("event_body", "event.json.zst", zstd)
    # Refusals the tests check (tests/ingest.rs's corrupt(), validate.rs's cases).
    broken = [
        ("no-timestamp", {"metadata": {"eventType": "x"}}),
        ("metric-string", {**SEED_EVENT, "metrics": {"pageLoadTime": "fast"}}),
        ("unknown-field", {**SEED_EVENT, "unexpected": True}),
        ("dimension-object", {"timestamp": 1733754615234, "metadata": {
            "eventType": "x", "dimensions": {"c": {"a": 1}}}}),
        ("dollar-key", {"timestamp": 1733754615234, "metadata": {"eventType": "x"},
                        "geo": {"c": [1, {"$bad": 2}]}}),
        ("reserved-count", {"timestamp": 1733754615234, "metadata": {"eventType": "x"},
                            "metrics": {"count": 1}}),
        ("deep", {"timestamp": 1733754615234, "metadata": {"eventType": "x"},
                  "attributes": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}}),
    ]
    for name, e in broken:
        write("event_body", f"{name}.json", json.dumps(e))
    write("event_body", "truncated.ndjson", one[: len(one) // 2] + "\n" + one + "\n")
    write("event_body", "seconds-not-millis.json",
          '{"timestamp": 1733754615, "metadata": {"eventType": "x"}}')


def queries():
    fixtures = sorted((ROOT / "tests/fixtures/queries").glob("*.json"))
    for f in fixtures:
        write("query_model", f.name, f.read_text())
    targets, variables = panel_targets()
    for t in unique(targets):
        digest = hashlib.sha1(json.dumps(t, sort_keys=True).encode()).hexdigest()[:8]
        write("query_model", f"panel-{t.get('mode', 'builder')}-{digest}.json", json.dumps(t))
    for v in unique(variables):
        v = {k: val for k, val in v.items() if k != "mode"}
        digest = hashlib.sha1(json.dumps(v, sort_keys=True).encode()).hexdigest()[:8]
        write("variable_query", f"dashboard-{digest}.json", json.dumps(v))
    fixture = json.loads((ROOT / "tests/fixtures/queries/variable_dimension_values.json").read_text())
    fixture.pop("mode", None)
    write("variable_query", "fixture-dimension-values.json", json.dumps(fixture))
    write("variable_query", "dimensions.json", '{"variable": "dimensions", "eventType": "page_view"}')

    pipelines = [t["pipeline"] for t in targets if t.get("mode") == "pipeline"]
    pipelines.append(json.loads((ROOT / "tests/fixtures/queries/pipeline_time_group.json")
                                .read_text())["pipeline"])
    # The read-only rules' cases of src/query/pipeline.rs's tests.
    pipelines += [
        '[{"$match": $__timeFilter(timestamp)}, {"$group": {"_id": $__timeGroup(timestamp), "n": {"$sum": 1}}}, '
        '{"$match": {"x": {"$lt": $__timeTo, "$gte": $__timeFrom}, "i": $__interval_ms}}]',
        '[{"$match": {}}, {"$merge": {"into": "x"}}]',
        '[{"$out": "x"}]',
        '[{"$match": {"$where": "1"}}]',
        '[{"$group": {"_id": 1, "x": {"$accumulator": {}}}}]',
        '[{"$project": {"x": {"$function": {}}}}]',
        '[{"$lookup": {"from": "metrics_hourly", "localField": "a", "foreignField": "b", "as": "c"}}]',
        '[{"$unionWith": {"coll": "events", "pipeline": [{"$match": $__timeFilter(timestamp)}]}}]',
    ]
    for i, p in enumerate(unique(pipelines)):
        write("pipeline_check", f"{i:02}.txt", p)


def rules():
    for path in sorted((ROOT / "provisioning").rglob("*rules*.yaml")):
        write("alert_rules", path.name, path.read_text())
    # src/alerting/rules.rs's full rule, in TOML.
    write("alert_rules", "full-rule.toml", '''
[[rules]]
id = "slow-pages"
name = "Slow page loads"
eventType = "page_view"
measure = { type = "percentile", metric = "pageLoadTime", percentile = 95 }
filters = [ { dimension = "deviceType", op = "eq", values = ["mobile"] } ]
groupBy = ["country"]
window = "5m"
condition = { type = "above", threshold = 3000 }
for = "5m"
severity = "critical"
labels = { team = "web" }
annotations = { summary = "p95 {{value}} ms in {{country}}" }
notifiers = ["ops"]
repeatInterval = "1h"

[[rules]]
id = "quiet"
condition = { type = "absent", minutes = 10 }
''')
    # The conditions of tests/alerting/*.json, one rule each.
    lines = ["rules:"]
    for path in sorted((ROOT / "tests/alerting").glob("*.json")):
        case = json.loads(path.read_text())
        lines.append(f"  - id: {path.stem.replace('_', '-')}")
        lines.append(f"    condition: {json.dumps(case['condition'])}")
        if "for" in case:
            lines.append(f"    for: {case['for']}")
    write("alert_rules", "golden-conditions.yaml", "\n".join(lines) + "\n")


def configs():
    readme = (ROOT / "README.md").read_text()
    for i, block in enumerate(re.findall(r"```toml\n(.*?)```", readme, re.S)):
        write("daemon_config", f"readme-{i}.toml", block)
    write("daemon_config", "tests-alerting.toml", '''writer_id = "w1"
[mongodb]
uri = "mongodb://127.0.0.1:27017/?replicaSet=rs0"
database = "pulse_test"
[http]
listen = "127.0.0.1:0"
[alerting]
enabled = true
rules_file = "/tmp/rules.yaml"
[[alerting.notifiers]]
type = "webhook"
name = "hook"
url = "http://127.0.0.1:9/hook"
secret = "WEBHOOK-SECRET-123"
''')


if __name__ == "__main__":
    clear_seeds()
    events()
    queries()
    rules()
    configs()
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"{sum(1 for f in CORPUS.rglob('*') if f.is_file())} files, {total} bytes in {CORPUS}")
