#!/usr/bin/env python3
"""Checks that a subscription's `flush` and `close` are answered without the
server's ack linger: run against a server whose `delivery.record_linger` is far
longer than the waits here (the Rust test starts it so), an ack that is only
sent would be answered after the linger; `flush` sends it with `wait`.

Usage: python3 tests/check_flush.py --addr HOST:PORT
Prints `ok: <check>` per check and exits 0, or `FAIL: ...` and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chronos_client import ChronosError, Client  # noqa: E402

# Well within the server's linger (20 s in the Rust test).
PROMPT_S = 8.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", default=os.environ.get("CHRONOS_ADDR", "localhost:9000"))
    args = parser.parse_args()
    with Client(args.addr, timeout_s=PROMPT_S) as client:
        try:
            client.publish("flush-t", "f-1", "x")
            client.publish("flush-t", "f-2", "y")
            sub = client.subscribe("flushers", "flush-t", max_inflight=4, start="earliest")
            got = [sub.poll(PROMPT_S), sub.poll(PROMPT_S)]
            if None in got:
                raise TimeoutError(f"deliveries within {PROMPT_S} s: {got}")
            sub.ack(got[0])
            started = time.monotonic()
            totals = sub.flush(PROMPT_S)
            if totals.acked != 1:
                raise AssertionError(f"flush totals {totals}")
            print(f"ok: flush answered in {time.monotonic() - started:.2f} s")
            sub.ack(got[1])
            started = time.monotonic()
            sub.close(PROMPT_S)
            took = time.monotonic() - started
            if took >= PROMPT_S - 1:
                raise AssertionError(f"close waited {took:.2f} s for its ack's answer")
            described = client.describe_group("flushers", "flush-t")
            if described.inflight != 0:
                raise AssertionError(f"the ack sent by close was not recorded: {described}")
            print(f"ok: close recorded its ack in {took:.2f} s")
        except (AssertionError, ChronosError, TimeoutError) as err:
            print(f"FAIL: {err}")
            return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
