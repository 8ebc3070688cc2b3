#!/usr/bin/env python3
"""Cancels and reschedules racing their events' due times.

EVENTS events due over 2 s; for each, 8 threads send, within 3 ms either
side of its due time, a cancel or a reschedule to one second later. Then
checks, for one consumer group: a cancelled event (OK) is never delivered;
a cancel refused with FAILED_PRECONDITION (already fired) means delivered
once; a reschedule answered as moved is delivered once, not before its new
time; one answered as a duplicate (it had fired) is delivered once; nothing
early. Needs a running node (ADDR) and the Python SDK's generated code.
"""

import collections
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))
from chronos_client import ChronosError, Client  # noqa: E402

EVENTS = int(os.environ.get("EVENTS", "4000"))
THREADS = 8


def main() -> int:
    client = Client(os.environ.get("ADDR", "127.0.0.1:9000"))
    topic = "races-%d" % int(time.time())
    got = collections.defaultdict(list)
    lock = threading.Lock()
    stop = threading.Event()
    subscribed = threading.Event()

    def consume() -> None:
        with client.subscribe("g", topic, max_inflight=1000) as sub:
            subscribed.set()
            while not stop.is_set():
                d = sub.poll(0.05)
                if d is None:
                    continue
                with lock:
                    got[d.message_id].append((int(time.time() * 1000), d.due_ts))
                sub.ack(d)
            sub.flush(5.0)

    consumer = threading.Thread(target=consume)
    consumer.start()
    subscribed.wait(10)
    first = int(time.time() * 1000) + 3000
    due = {"e%05d" % i: first + (i * 2000) // EVENTS for i in range(EVENTS)}
    ids = list(due)
    for i in range(0, EVENTS, 500):
        client.publish_batch([dict(topic=topic, message_id=m, payload=b"x", at=due[m]) for m in ids[i : i + 500]])
    outcome = {}
    moved_to = {}

    def race(k: int) -> None:
        rnd = random.Random(k)
        for m in ids[k::THREADS]:
            wait = due[m] / 1000 + rnd.uniform(-0.003, 0.003) - time.time()
            if wait > 0:
                time.sleep(wait)
            try:
                if rnd.random() < 0.5:
                    client.cancel(topic, m)
                    outcome[m] = "cancelled"
                else:
                    r = client.publish(topic, m, b"x", at=due[m] + 1000, reschedule=True)
                    outcome[m] = "duplicate" if r.duplicate else "moved"
                    moved_to[m] = due[m] + 1000
            except ChronosError as err:
                outcome[m] = err.code.name

    racers = [threading.Thread(target=race, args=(k,)) for k in range(THREADS)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    time.sleep(3)
    stop.set()
    consumer.join()
    bad = []
    for m in ids:
        o, deliveries = outcome.get(m), got.get(m, [])
        want = 0 if o == "cancelled" else 1
        if len(deliveries) != want:
            bad.append((m, o, "delivered %d times" % len(deliveries)))
        if o == "moved" and deliveries and deliveries[0][0] < moved_to[m]:
            bad.append((m, o, "delivered before its new time"))
        if any(at < d for at, d in deliveries):
            bad.append((m, o, "early"))
    print("outcomes %s; violations %d" % (dict(collections.Counter(outcome.values())), len(bad)))
    for b in bad[:10]:
        print("  ", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
