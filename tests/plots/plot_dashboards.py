"""Renders each provisioned dashboard's panel data, as the plugin answered it in
tests/dashboards.rs, into one PNG per dashboard: a stand-in for screenshots, since
no Grafana server runs here. Panels are laid out on Grafana's 24-column grid and
drawn by type (time series, stat, bar gauge, bar chart, table, geomap); the
transformations the dashboards use (reduce to rows, partition by values) are
applied here the way Grafana applies them.

Usage: python plot_dashboards.py PANELS_JSON OUT_DIR  (writes OUT_DIR/<uid>.png)
"""

import datetime as dt
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

# Country centroids for the geomap's country-code lookup (Grafana's gazetteer
# public/gazetteer/countries.json does the same in the browser).
CENTROIDS = {
    "FR": (2.2, 46.2), "US": (-98.6, 39.8), "DE": (10.4, 51.2), "GB": (-2.0, 54.0),
    "JP": (138.3, 36.2), "BR": (-51.9, -14.2), "IN": (78.9, 20.6), "ES": (-3.7, 40.4),
    "IT": (12.6, 41.9), "CA": (-106.3, 56.1), "AU": (133.8, -25.3), "NL": (5.3, 52.1),
}
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#FADE2A"]
TIME_NAMES = {"time", "timeEnd", "timestamp", "at", "since"}


def as_time(v):
    """A time value as the reader gives it: RFC 3339 text, or epoch ms / ns."""
    if isinstance(v, str):
        try:
            return dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(v, (int, float)):
        scale = 1e9 if v > 1e17 else 1e3
        return dt.datetime.fromtimestamp(v / scale, tz=dt.timezone.utc)
    return None


def is_time_field(f):
    vals = [v for v in f["values"] if v is not None]
    return f["name"] in TIME_NAMES and vals and all(as_time(v) for v in vals)


def numeric(f):
    vals = [v for v in f["values"] if v is not None]
    return vals and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)


def display_names(panel):
    names = {}
    for o in (panel.get("fieldConfig") or {}).get("overrides", []):
        if o["matcher"]["id"] == "byName":
            for p in o["properties"]:
                if p["id"] == "displayName":
                    names[o["matcher"]["options"]] = p["value"]
    return names


def series_label(f):
    labels = f.get("labels") or {}
    if labels and f["name"] in ("count", "value"):
        return " ".join(labels.values())
    return f["name"]


def field_filter(panel):
    spec = ((panel.get("options") or {}).get("reduceOptions") or {}).get("fields", "")
    if not spec:
        return lambda name: True
    if spec.startswith("/") and spec.endswith("/"):
        rx = re.compile(spec[1:-1])
        return lambda name: bool(rx.search(name))
    return lambda name: name == spec


def partition(frames, key):
    """Grafana's partitionByValues: one frame per value of `key`."""
    out = {}
    for fr in frames:
        fields = {f["name"]: f for f in fr["fields"]}
        if key not in fields:
            continue
        n = len(fields[key]["values"])
        for i in range(n):
            k = fields[key]["values"][i]
            part = out.setdefault(k, {"name": str(k), "fields": {}})
            for name, f in fields.items():
                if name == key:
                    continue
                part["fields"].setdefault(name, []).append(f["values"][i])
    return [
        {"name": k, "fields": [{"name": n if n in TIME_NAMES else str(k), "labels": {}, "values": v} for n, v in p["fields"].items()]}
        for k, p in out.items()
    ]


def reduce_rows(frames):
    """Grafana's reduce (series to rows, sum): one (label, total) per series."""
    rows = []
    for fr in frames:
        for f in fr["fields"]:
            if is_time_field(f) or not numeric(f):
                continue
            rows.append((series_label(f), sum(v for v in f["values"] if v is not None), f.get("labels") or {}))
    return rows


def draw_timeseries(ax, panel, frames):
    for t in panel.get("transformations") or []:
        if t["id"] == "partitionByValues":
            frames = partition(frames, t["options"]["fields"][0])
    names = display_names(panel)
    i = 0
    bars = "bars" in json.dumps(panel.get("fieldConfig") or {})
    # Bars as wide as the data's spacing (matplotlib's date unit is a day).
    stamps = sorted({as_time(v) for fr in frames for f in fr["fields"] if is_time_field(f) for v in f["values"]} - {None})
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:]) if b > a]
    width = 0.8 * (min(gaps) if gaps else 60) / 86400
    for fr in frames:
        times = next((f for f in fr["fields"] if is_time_field(f)), None)
        if times is None:
            continue
        xs = [as_time(v) for v in times["values"]]
        for f in fr["fields"]:
            if f is times or not numeric(f):
                continue
            pts = [(x, y) for x, y in zip(xs, f["values"]) if y is not None]
            if not pts:
                continue
            x, y = zip(*pts)
            label = names.get(f["name"], series_label(f))
            color = PALETTE[i % len(PALETTE)]
            if bars:
                ax.bar(x, y, width=width, color=color, label=label, alpha=0.8)
            else:
                ax.plot(x, y, color=color, label=label, linewidth=1.2)
            i += 1
    locator = mdates.AutoDateLocator(minticks=3, maxticks=6)
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator)
    formatter.offset_formats = [""] * 6  # the date offset would overlap the next panel's title
    ax.xaxis.set_major_formatter(formatter)
    unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
    if unit:
        ax.set_ylabel(unit, fontsize=7)
    if 0 < i <= 10:
        ax.legend(fontsize=6, loc="upper left", frameon=False, ncol=min(i, 4))


def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "ms":
        return f"{v:.0f} ms"
    if unit == "s":
        return f"{v:.1f} s"
    return f"{v:,.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.2f}"


def last_values(panel, frames):
    keep = field_filter(panel)
    names = display_names(panel)
    out = []
    for fr in frames:
        for f in fr["fields"]:
            if is_time_field(f) or not numeric(f) or not keep(f["name"]):
                continue
            vals = [v for v in f["values"] if v is not None]
            out.append((names.get(f["name"], series_label(f)), vals[-1] if vals else None))
    return out


def draw_stat(ax, panel, frames):
    unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
    values = last_values(panel, frames)
    ax.axis("off")
    n = max(len(values), 1)
    for i, (name, v) in enumerate(values):
        y = 1 - (i + 0.5) / n
        ax.text(0.5, y + 0.06, fmt(v, unit), ha="center", va="center", fontsize=20 if n < 3 else 14, color="#73BF69", weight="bold")
        if n > 1:
            ax.text(0.5, y - 0.12, name, ha="center", va="center", fontsize=7, color="#555")


def draw_bargauge(ax, panel, frames):
    values = [(n, v or 0) for n, v in last_values(panel, frames)]
    names = [n for n, _ in values][::-1]
    vals = [v for _, v in values][::-1]
    ax.barh(range(len(vals)), vals, color=PALETTE[: len(vals)][::-1])
    for y, (n, v) in enumerate(zip(names, vals)):
        ax.text(0, y + 0.42, f"{n}: {v:,.0f}", va="bottom", fontsize=7)
    ax.set_yticks([])
    ax.set_ylim(-0.6, len(vals))


def draw_barchart(ax, panel, frames):
    rows = sorted(reduce_rows(frames), key=lambda r: r[1])
    ax.barh([r[0] for r in rows], [r[1] for r in rows], color="#5794F2")
    ax.tick_params(labelsize=6)


def draw_geomap(ax, panel, frames):
    rows = reduce_rows(frames)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 80)
    ax.set_facecolor("#eef3f8")
    top = max((r[1] for r in rows), default=1) or 1
    for _, total, labels in rows:
        code = labels.get("country")
        if code in CENTROIDS:
            lon, lat = CENTROIDS[code]
            ax.scatter([lon], [lat], s=30 + 600 * total / top, color="#F2495C", alpha=0.6)
            ax.text(lon, lat, f"{code}\n{total:,.0f}", ha="center", va="center", fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_table(ax, panel, frames):
    ax.axis("off")
    fr = next((f for f in frames if f["fields"]), None)
    if fr is None:
        return
    fields = [f for f in fr["fields"] if f["name"] not in ("timeEnd",)][:6]
    rows = list(zip(*[f["values"] for f in fields]))[:8]

    def cell(f, v):
        if v is None:
            return ""
        if is_time_field(f):
            t = as_time(v)
            return t.strftime("%H:%M:%S") if t else str(v)
        if isinstance(v, float):
            return f"{v:,.2f}".rstrip("0").rstrip(".")
        return str(v)[:40]

    text = [[cell(f, v) for f, v in zip(fields, r)] for r in rows]
    if not text:
        return
    t = ax.table(cellText=text, colLabels=[f["name"] for f in fields], loc="upper center", cellLoc="left")
    t.auto_set_font_size(False)
    t.set_fontsize(6)
    t.scale(1, 1.2)


DRAW = {
    "timeseries": draw_timeseries,
    "stat": draw_stat,
    "bargauge": draw_bargauge,
    "barchart": draw_barchart,
    "geomap": draw_geomap,
    "table": draw_table,
}


def render(dashboard, path):
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height = rows * 0.42 + 1.0
    fig = plt.figure(figsize=(16, height), dpi=100)
    fig.suptitle(dashboard["title"], fontsize=13, x=0.01, y=1 - 0.15 / height, ha="left")
    grid = fig.add_gridspec(rows, 24, hspace=1.6, wspace=1.2, top=1 - 0.8 / height, bottom=0.03, left=0.04, right=0.99)
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        ax.set_title(p["title"], fontsize=8, loc="left")
        ax.tick_params(labelsize=6)
        DRAW.get(p["type"], draw_table)(ax, p, p["frames"])
    fig.savefig(path)
    plt.close(fig)


def main():
    data_path, out_dir = sys.argv[1], sys.argv[2]
    with open(data_path) as f:
        dashboards = json.load(f)
    for d in dashboards:
        render(d, f"{out_dir}/{d['uid']}.png")


if __name__ == "__main__":
    main()
