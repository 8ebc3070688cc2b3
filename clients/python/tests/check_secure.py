#!/usr/bin/env python3
"""Checks the wrapper against a server with TLS and tokens.

Usage: python3 tests/check_secure.py --addr HOST:PORT --ca CA.pem --token TOKEN
Publishes and receives over TLS with the token; without a token the server
answers UNAUTHENTICATED, with a token for another topic PERMISSION_DENIED.
Prints `ok: <check>` per check and exits 0, or `FAIL: ...` and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chronos_client import ChronosError, Client  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()
    tls = dict(tls_ca=args.ca, tls_domain="localhost", timeout_s=10.0)

    with Client(args.addr, token=args.token, **tls) as client:
        r = client.publish("orders.py", "py-1", b"hello")
        print(f"ok: published over TLS with a token to partition {r.partition}")
        with client.subscribe("orders-py", "orders.py", start="earliest") as sub:
            d = next(iter(sub))
            if d.message_id != "py-1":
                print(f"FAIL: received {d.message_id}")
                return 1
            sub.ack(d)
        print("ok: received and acked over TLS")
        try:
            client.publish("billing", "py-2", b"no")
            print("FAIL: publish to billing was allowed")
            return 1
        except ChronosError as e:
            if e.code != grpc.StatusCode.PERMISSION_DENIED:
                print(f"FAIL: {e.code} {e.message}")
                return 1
            print(f"ok: PERMISSION_DENIED: {e.message}")

    with Client(args.addr, **tls) as anonymous:
        try:
            anonymous.publish("orders.py", "py-3", b"no")
            print("FAIL: publish without a token was allowed")
            return 1
        except ChronosError as e:
            if e.code != grpc.StatusCode.UNAUTHENTICATED:
                print(f"FAIL: {e.code} {e.message}")
                return 1
            print("ok: UNAUTHENTICATED without a token")
    try:
        Client(args.addr, token="has space", **tls)
        print("FAIL: a token with a space was accepted")
        return 1
    except ValueError as e:
        if "token" not in str(e) or "has space" in str(e):
            print(f"FAIL: {e}")
            return 1
        print("ok: a bad token is refused locally, naming the option")
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
