"""The server's lateness histograms as shares within bounds, for the bench scripts.

`shares(after, name, bounds=BOUNDS, before=None)`: of the observations of the
Prometheus histogram `name` in the scrape text `after` (minus those already
in `before`, to cover a window), the share at or below each bound (seconds,
as the `le` label writes it), summed over every label set.
"""


def buckets(text, name):
    counts = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            counts[le] = counts.get(le, 0) + float(line.rsplit(" ", 1)[1])
    return counts


# The bounds both bench scripts print (seconds, as the `le` labels write them).
BOUNDS = ("0.001", "0.0025", "0.005", "0.01", "0.02", "0.05", "0.1", "0.25")


def shares(after, name, bounds=BOUNDS, before=None):
    b, a = buckets(after, name), buckets(before or "", name)
    total = (b.get("+Inf", 0) - a.get("+Inf", 0)) or 1
    return " ".join("<=%gms %.4f" % (float(le) * 1000, (b[le] - a.get(le, 0)) / total)
                    for le in bounds if le in b)
