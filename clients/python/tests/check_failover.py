#!/usr/bin/env python3
"""Checks the wrapper across a node killed under it, in a 3-node cluster.

A client is given every node. A member subscribes, events are published one
per call, then the node the member streams from is killed (SIGKILL), or
frozen (SIGSTOP: it answers nothing, and its connections stay open), and
publishing goes on: every publish must succeed (retried on the
next node), and the member must receive every event (subscribed again on
the next node; what it held unacked is redelivered). Exits 0 after printing
`ok: ...` lines, or prints `FAIL: ...` and exits 1. Every wait is bounded.

Usage: python3 tests/check_failover.py --nodes A=PID_A,B=PID_B,C=PID_C [--signal STOP]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chronos_client import ChronosError, Client  # noqa: E402

TOPIC = "sdk-failover"
BEFORE = 100
AFTER = 100
WAIT_S = 20.0


class Failed(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


class Collector(threading.Thread):
    """Takes and acks deliveries until told to stop; notes every message id."""

    def __init__(self, sub):
        super().__init__(daemon=True)
        self.sub = sub
        self.seen: set = set()
        self.deliveries = 0
        self.error = None
        self.lock = threading.Condition()
        self.stop = False

    def run(self) -> None:
        try:
            while not self.stop:
                d = self.sub.poll(0.2)
                if d is None:
                    continue
                self.sub.ack(d)
                with self.lock:
                    self.deliveries += 1
                    self.seen.add(d.message_id)
                    self.lock.notify_all()
        except ChronosError as err:
            self.error = err
            with self.lock:
                self.lock.notify_all()

    def wait_for(self, ids: set, within_s: float, what: str) -> None:
        deadline = time.monotonic() + within_s
        with self.lock:
            while not ids <= self.seen:
                if self.error is not None:
                    raise Failed(f"{what}: the subscription failed: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(ids - self.seen)
                    raise Failed(f"{what}: {len(missing)} never delivered within {within_s} s, e.g. {missing[:5]}")
                self.lock.wait(left)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", required=True, help="host:port=pid,...")
    parser.add_argument("--signal", choices=["KILL", "STOP"], default="KILL")
    args = parser.parse_args()
    how = {"KILL": "killed", "STOP": "frozen"}[args.signal]
    pids = {addr: int(pid) for addr, pid in (n.split("=") for n in args.nodes.split(","))}
    client = Client(list(pids), timeout_s=10)
    try:
        sub = client.subscribe("watchers", TOPIC, start="earliest", max_inflight=64)
        collector = Collector(sub)
        collector.start()
        before = {f"f-{i}" for i in range(BEFORE)}
        for i in range(BEFORE):
            client.publish(TOPIC, f"f-{i}", b"x" * 256)
        collector.wait_for(before, WAIT_S, "before the kill")
        killed = sub.addr
        print(f"ok: {BEFORE} published and received through {killed}")

        os.kill(pids[killed], getattr(signal, f"SIG{args.signal}"))
        killed_at = time.monotonic()
        after = {f"f-{i}" for i in range(BEFORE, BEFORE + AFTER)}
        for i in range(BEFORE, BEFORE + AFTER):
            client.publish(TOPIC, f"f-{i}", b"y" * 256)
        published_s = time.monotonic() - killed_at
        expect(client.addr != killed, f"every publish succeeded but the client is still on {killed}")
        print(f"ok: {AFTER} published after the node was {how} ({published_s:.1f} s), now through {client.addr}")

        collector.wait_for(after, WAIT_S, "after the kill")
        expect(
            sub.reconnects >= 1 and sub.addr != killed,
            f"every event arrived but the member is on {sub.addr} after {sub.reconnects} resubscribes",
        )
        print(
            f"ok: all {BEFORE + AFTER} received ({collector.deliveries} deliveries) "
            f"{time.monotonic() - killed_at:.1f} s after the node was {how}; {sub.reconnects} resubscribe(s)"
        )
        collector.stop = True
        collector.join(5)
        sub.close()
    except (Failed, ChronosError, TimeoutError) as err:
        print(f"FAIL: {err}")
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
