#!/usr/bin/env python3
"""Members of one group joining and leaving while events fire.

EVENTS events (256-byte payloads) due over EVENTS / RATE seconds, published
ahead; SLOTS threads each subscribe, take deliveries for 50-400 ms, ack 90 %
of them (the rest are left unacked, as by a consumer that crashes on them),
close, and subscribe again. Prints what was acked, dead-lettered (the
server's counter), early, delivered more than once, and how long after its
due time the slowest event was acked. Used by scripts/bench-churn.sh.
"""

import os
import random
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
from chronos_client import Client  # noqa: E402

EVENTS = int(os.environ.get("EVENTS", "20000"))
RATE = int(os.environ.get("RATE", "1000"))
SLOTS = int(os.environ.get("SLOTS", "4"))
ADDR = os.environ.get("ADDR", "127.0.0.1:9000")
METRICS = os.environ.get("METRICS", "http://127.0.0.1:8080/metrics")


def dead_letters() -> int:
    text = urllib.request.urlopen(METRICS, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("chronos_dead_letters_total "):
            return int(float(line.split()[1]))
    return 0


def main() -> int:
    topic = "churn-%d" % int(time.time())
    client = Client(ADDR)
    with client.subscribe("g", topic, start="earliest") as sub:  # creates the group
        sub.poll(0.2)
    start = int(time.time() * 1000) + 3000
    ids = ["m%07d" % i for i in range(EVENTS)]
    due = {m: start + (i * 1000) // RATE for i, m in enumerate(ids)}
    for i in range(0, EVENTS, 500):
        batch = ids[i : i + 500]
        client.publish_batch([dict(topic=topic, message_id=m, payload=b"x" * 256, at=due[m]) for m in batch])
    lock = threading.Lock()
    acked_at = {}
    seen = {}
    early = []
    sessions = [0]
    stop = threading.Event()

    def slot(k: int) -> None:
        rnd = random.Random(k)
        while not stop.is_set():
            with client.subscribe("g", topic, max_inflight=200) as s:
                with lock:
                    sessions[0] += 1
                end = time.time() + rnd.uniform(0.05, 0.4)
                while time.time() < end:
                    d = s.poll(0.02)
                    if d is None:
                        continue
                    now = int(time.time() * 1000)
                    with lock:
                        seen[d.message_id] = seen.get(d.message_id, 0) + 1
                        if now < d.due_ts:
                            early.append(d.message_id)
                    if rnd.random() < 0.9:
                        s.ack(d)
                        with lock:
                            acked_at.setdefault(d.message_id, now)
                s.flush(5.0)

    threads = [threading.Thread(target=slot, args=(k,)) for k in range(SLOTS)]
    for t in threads:
        t.start()
    deadline = time.time() + 3 + EVENTS / RATE + 60
    while time.time() < deadline:
        with lock:
            settled = len(acked_at)
        if settled + dead_letters() >= EVENTS:
            break
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    dead = dead_letters()
    slowest = max((acked_at[m] - due[m] for m in acked_at), default=0)
    twice = sum(1 for n in seen.values() if n > 1)
    print(
        "acked %d, dead-lettered %d, unaccounted %d of %d; early %d; seen more than once %d; "
        "slowest ack %d ms after due; %d sessions"
        % (len(acked_at), dead, EVENTS - len(acked_at) - dead, EVENTS, len(early), twice, slowest, sessions[0])
    )
    return 0 if len(acked_at) + dead == EVENTS and not early else 1


if __name__ == "__main__":
    sys.exit(main())
