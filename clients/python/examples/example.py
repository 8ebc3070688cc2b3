#!/usr/bin/env python3
"""Publish an event due in about a second, receive it as a consumer group, ack it, describe it.

Usage: python3 example.py [--addr HOST:PORT] [--timeout SECONDS]
The address defaults to $CHRONOS_ADDR, else localhost:9000. Exits 0 once the
event arrived (not before its schedule_ts) and its ack is recorded; 1 if it
does not arrive within the timeout or a call fails. Uses the installed package
(`pip install ./clients/python`), or clients/python on PYTHONPATH after
generate.sh.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from chronos_client import ChronosError, Client, now_ms

TOPIC = "example"
GROUP = "example"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default=os.environ.get("CHRONOS_ADDR", "localhost:9000"))
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the event")
    args = parser.parse_args()

    message_id = f"example-{uuid.uuid4().hex[:8]}"
    with Client(args.addr) as client:
        # A new group starts with events due from this moment on, so it gets
        # this event however long subscribing takes (an existing group keeps
        # its place and gets it anyway).
        start_ms = now_ms()
        r = client.publish(TOPIC, message_id, b"hello from python", after=1.0)
        print(f"published {message_id} to {TOPIC}: partition {r.partition} offset {r.offset}, due_ts {r.due_ts}")

        with client.subscribe(GROUP, TOPIC, max_inflight=16, start=start_ms) as sub:
            print(f"subscribed as group {GROUP}")
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                d = sub.poll(deadline - time.monotonic())
                if d is None:
                    if sub.ended:
                        break
                    continue
                received_ms = now_ms()
                if d.message_id != message_id:
                    # Left over from an earlier run that did not ack it.
                    sub.ack(d)
                    continue
                if received_ms < d.schedule_ts:
                    print(f"EARLY: received {received_ms - d.schedule_ts} ms before schedule_ts", file=sys.stderr)
                    return 1
                print(
                    f"received {d.message_id} (attempt {d.attempt}, payload {d.payload!r}) "
                    f"{received_ms - d.schedule_ts} ms after its schedule_ts"
                )
                sub.ack(d)
                totals = sub.flush(timeout_s=max(1.0, deadline - time.monotonic()))
                print(f"acked {d.message_id} (server acked {totals.acked})")
                # Where the event stands for each group (the ack applies a moment later).
                state = None
                while state != "acked" and time.monotonic() < deadline:
                    info = client.describe(TOPIC, message_id)
                    state = {g.group: g.status for g in info.groups}.get(GROUP)
                    if state != "acked":
                        time.sleep(0.05)
                print(f"{message_id}: {info.status}, group {GROUP}: {state}")
                return 0 if state == "acked" else 1
    print(f"{message_id} did not arrive within {args.timeout} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ChronosError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except TimeoutError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
