"""Prints compare.sh's JSON summaries as one markdown table, systems side by side.

Usage: table.py OUT_DIR SYSTEM... WORKLOAD=LABEL...
Reads OUT_DIR/<system>.<workload>.json; a missing or failed run shows as "—".
"""
import json
import sys

HEADERS = {
    "redis-always": "Redis `appendfsync always`",
    "redis-everysec": "Redis `appendfsync everysec`",
    "chronos-always": "Chronos fsync `always`",
    "chronos-periodic": "Chronos fsync `periodic`",
}


def load(out, system, workload):
    try:
        with open(f"{out}/{system}.{workload}.json") as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def publish(s):
    lat = s["latency_ms"]
    return f"{s['events_per_sec'] / 1000:.1f} K/s (p50 {lat['p50']:.2f}, p99 {lat['p99']:.2f} ms)"


def faults(s):
    d = s["delivery"]
    note = f"early {d['early']}, missing {d['missing']}"
    return note + (", TIMED OUT" if d["timed_out"] else "")


def lateness(s):
    lat = s["lateness_ms"]
    return f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['p999']:.1f} / {lat['max']:.1f}"


def burst_rate(s):
    rate = s["delivery"]["drain_unique_per_sec"]
    return "—" if rate is None else f"{rate / 1000:.1f} K/s"


ROWS = {
    "publish1": [("events/s (RPC or round-trip latency)", publish)],
    "publishN": [("events/s (RPC or round-trip latency)", publish)],
    "schedule": [("lateness p50 / p99 / p99.9 / max ms", lateness), ("early, missing", faults)],
    "burst": [("due → last ack", burst_rate), ("lateness p50 / p99 / p99.9 / max ms", lateness),
              ("early, missing", faults)],
}


def main():
    out = sys.argv[1]
    systems = [a for a in sys.argv[2:] if "=" not in a]
    workloads = [a.split("=", 1) for a in sys.argv[2:] if "=" in a]
    print("| workload | measure | " + " | ".join(HEADERS.get(s, s) for s in systems) + " |")
    print("|---|---|" + "---|" * len(systems))
    for workload, label in workloads:
        for measure, cell in ROWS[workload]:
            cells = []
            for system in systems:
                summary = load(out, system, workload)
                try:
                    cells.append("—" if summary is None else cell(summary))
                except (KeyError, TypeError):
                    cells.append("—")
            print(f"| {label} | {measure} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
