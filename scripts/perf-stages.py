#!/usr/bin/env python3
"""Where a server's CPU goes, by stage, from a call-graph profile.

    perf record -F 999 --call-graph dwarf,16384 -p PID -- sleep 3
    perf script -F comm,ip,sym > stacks.txt
    scripts/perf-stages.py stages < stacks.txt          # share per stage
    scripts/perf-stages.py under REGEX [DEPTH] < ...    # what runs below REGEX
    scripts/perf-stages.py leaves REGEX [N] < ...       # leaf functions under REGEX

Each sample goes to the first stage (in the order below) one of whose
patterns matches a frame of its stack, so a stage's share includes what
it calls (RocksDB writes made by the apply count as the apply's).
`scripts/bench-publish.sh PERF=1` records such a profile.
"""
import collections
import re
import signal
import sys

STAGES = [
    ("node-log flusher thread", r"raftlog::flusher"),
    ("RocksDB flushes and compactions", r"rocksdb::(FlushJob|CompactionJob|DBImpl::BackgroundCall)"),
    ("state machine apply", r"StateMachine::apply_entries|sm::worker::Worker"),
    ("partition owners", r"chronos_partition::owner::"),
    ("openraft core", r"openraft::core::raft_core|RaftCore"),
    ("API handlers and fan-out", r"chronos_api::|Partition::publish_with"),
    ("HTTP/2 and tonic", r"^h2::|hyper|tonic::"),
    ("tokio scheduler and I/O driver", r"tokio::runtime::(scheduler|park|io::driver|time)"),
]


def samples(stream):
    """Yields (thread name, frames leaf first) per sample of `perf script`."""
    comm, frames = None, []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line[0] not in " \t":
            if comm is not None:
                yield comm, frames
            comm, frames = line.strip(), []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            frames.append(parts[1].split("+0x")[0])
    if comm is not None:
        yield comm, frames


def stages(stream):
    compiled = [(name, re.compile(p)) for name, p in STAGES]
    counts, total = collections.Counter(), 0
    for comm, frames in samples(stream):
        total += 1
        name = "other"
        # Threads of their own count by name: their stacks do not always
        # unwind to a recognisable frame.
        if comm.startswith("raftlog-flush"):
            name = STAGES[0][0]
        elif comm.startswith("rocksdb:"):
            name = STAGES[1][0]
        else:
            for stage, pattern in compiled:
                if any(pattern.search(f) for f in frames):
                    name = stage
                    break
        counts[name] += 1
    print(f"{total} samples")
    for name, n in counts.most_common():
        print(f"{100 * n / max(total, 1):5.1f} %  {name}")


def under(stream, pattern, depth):
    """Counts, for samples with a frame matching `pattern`, the `depth`
    frames just below its innermost match."""
    rx, counts, n = re.compile(pattern), collections.Counter(), 0
    for _, frames in samples(stream):
        hits = [i for i, f in enumerate(frames) if rx.search(f)]
        if not hits:
            continue
        n += 1
        below = frames[: hits[0]][::-1][:depth]
        counts[" <- ".join(f[:90] for f in below) or "(itself)"] += 1
    print(f"{n} samples")
    for key, c in counts.most_common(30):
        print(f"{c:6d} {key}")


def leaves(stream, pattern, top):
    rx, counts, n = re.compile(pattern), collections.Counter(), 0
    for _, frames in samples(stream):
        if frames and any(rx.search(f) for f in frames):
            n += 1
            counts[frames[0][:110]] += 1
    print(f"{n} samples")
    for key, c in counts.most_common(top):
        print(f"{c:6d} {key}")


def main(argv):
    if len(argv) < 2 or argv[1] not in ("stages", "under", "leaves"):
        sys.exit(__doc__)
    if argv[1] == "stages":
        stages(sys.stdin)
    elif len(argv) < 3:
        sys.exit(__doc__)
    elif argv[1] == "under":
        under(sys.stdin, argv[2], int(argv[3]) if len(argv) > 3 else 1)
    else:
        leaves(sys.stdin, argv[2], int(argv[3]) if len(argv) > 3 else 30)


if __name__ == "__main__":
    # Piped into `head`: stop quietly when the reader has enough.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main(sys.argv)
