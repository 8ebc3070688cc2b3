#!/usr/bin/env python3
"""Checks the wrapper against a running server: nack → redelivery, errors, batches, cancel,
schedules, leaving a group, replay, consumer groups and dead letters, acks sent together,
retries and the next node, fetch and ack by id, the batching producer.

Usage: python3 tests/check_sdk.py --addr HOST:PORT [--http HOST:PORT]
Prints `ok: <check>` per check and exits 0, or prints `FAIL: ...` and exits 1.
Every wait is bounded. Expects a server whose topics start empty (a fresh one).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import urllib.request
import weakref
from datetime import datetime, timedelta, timezone

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chronos_client import ChronosError, Client, RetryPolicy, Subscription, now_ms  # noqa: E402

WAIT_S = 10.0


class Failed(Exception):
    pass


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def expect_error(code: grpc.StatusCode, fragment: str, fn) -> ChronosError:
    try:
        fn()
    except ChronosError as err:
        expect(err.code == code, f"expected {code.name}, got {err}")
        expect(fragment in err.message, f"expected {fragment!r} in {err.message!r}")
        return err
    raise Failed(f"expected ChronosError {code.name}, the call succeeded")


def expect_refused(call, field: str, what: str) -> None:
    """`call()` raises ValueError with a message starting with `field:`."""
    try:
        call()
    except ValueError as err:
        expect(str(err).startswith(f"{field}:"), f"{what}: {err}")
    else:
        raise Failed(f"{what} accepted")


def next_delivery(sub: Subscription, what: str):
    d = sub.poll(WAIT_S)
    expect(d is not None, f"no delivery ({what}) within {WAIT_S} s")
    return d


def check_nack_redelivers(client: Client) -> None:
    r = client.publish("sdk-nack", "n-1", "retry me")
    with client.subscribe("workers", "sdk-nack", max_inflight=4, start="earliest") as sub:
        first = next_delivery(sub, "first attempt")
        expect((first.message_id, first.attempt) == ("n-1", 1), f"first delivery: {first}")
        expect((first.partition, first.offset) == (r.partition, r.offset), f"{first} vs {r}")
        expect(first.payload == b"retry me", f"payload {first.payload!r}")
        sub.nack(first, delay_s=0.2)
        second = next_delivery(sub, "redelivery after nack")
        expect((second.message_id, second.attempt) == ("n-1", 2), f"redelivery: {second}")
        expect(second.delivery_id != first.delivery_id, "a redelivery has its own delivery id")
        sub.ack(second)
        totals = sub.flush(WAIT_S)
        expect((totals.acked, totals.nacked, totals.unknown) == (1, 1, []), f"totals {totals}")
        expect(sub.poll(0.5) is None, "nothing more after the ack")
    print("ok: nack redelivers with attempt 2, then ack")


def check_bad_input(client: Client) -> None:
    err = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, "event.topic", lambda: client.publish("__x", "m-1", b"x")
    )
    expect("reserved" in err.message, err.message)
    expect(err.field == "event.topic", f"field {err.field!r}")
    print(f"ok: topic __x refused: {err}")
    with client.subscribe("__g", "sdk-nack") as sub:
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, "subscribe.consumer_group", lambda: sub.poll(WAIT_S))
        expect(sub.ended, "the stream is over after the error")
    print("ok: group __g refused")
    expect_error(grpc.StatusCode.NOT_FOUND, "", lambda: client.cancel("sdk-cancel", "never-published"))
    print("ok: cancel of an unknown event is NOT_FOUND")
    for bad in (
        lambda: client.publish("t", "m", at=datetime(2030, 1, 1)),
        lambda: client.publish("t", "m", at=0, after=1),
        lambda: client.publish("t", "m", after=-1),
    ):
        try:
            bad()
        except ValueError:
            continue
        raise Failed("expected ValueError")
    print("ok: naive datetime, at+after, negative after refused locally")


def check_publish_batch_and_cancel(client: Client) -> None:
    later = datetime.now(timezone.utc) + timedelta(days=1)
    results = client.publish_batch(
        [
            {"topic": "sdk-batch", "message_id": "b-1", "payload": b"1", "key": "k"},
            {"topic": "sdk-batch", "message_id": "b-2", "payload": b"2", "key": "k", "headers": {"h": "v"}},
            {"topic": "sdk-batch", "message_id": "b-later", "at": later},
        ]
    )
    expect(len(results) == 3, f"{results}")
    expect(results[0].partition == results[1].partition, "same key, same partition")
    expect(results[1].offset == results[0].offset + 1, f"dense offsets: {results}")
    expect(results[2].due_ts == int(later.timestamp() * 1000), f"due_ts {results[2].due_ts}")
    dup = client.publish("sdk-batch", "b-1", b"again", key="k")
    expect(dup.duplicate and dup[:2] == results[0][:2], f"duplicate: {dup}")
    print("ok: publish_batch in order, same key same partition, duplicate detected")
    c = client.cancel("sdk-batch", "b-later")
    expect(tuple(c) == results[2][:2], f"cancel {c} vs {results[2]}")
    print("ok: cancel of a pending event")
    outcomes = client.cancel_batch(
        [
            {"topic": "sdk-batch", "message_id": "b-later"},
            {"topic": "sdk-batch", "message_id": "never-published"},
            {"topic": "sdk-batch", "message_id": "b-1", "key": "k"},
        ]
    )
    statuses = [(o.message_id, o.status) for o in outcomes]
    expect(
        statuses == [("b-later", "already_cancelled"), ("never-published", "not_found"), ("b-1", "already_fired")],
        f"cancel_batch {outcomes}",
    )
    expect(tuple(outcomes[2][2:]) == results[0][:2], f"{outcomes[2]} vs {results[0]}")
    print("ok: cancel_batch, one outcome per cancel in order (b-1 was due at once)")
    with client.subscribe("readers", "sdk-batch", start="earliest") as sub:
        got = {}
        deadline = time.monotonic() + WAIT_S
        while len(got) < 2 and time.monotonic() < deadline:
            d = sub.poll(deadline - time.monotonic())
            if d is not None:
                got[d.message_id] = d
                sub.ack(d)
        expect(sorted(got) == ["b-1", "b-2"], f"got {sorted(got)}")
        expect(got["b-2"].headers == {"h": "v"} and got["b-2"].key == "k", f"{got['b-2']}")
        expect(sub.flush(WAIT_S).acked == 2, "both acked")
        expect(sub.poll(0.5) is None, "the cancelled event never arrives")
    print("ok: earliest group gets the batch, not the cancelled event")


def check_schedules(client: Client) -> None:
    with client.subscribe("py-sched", "py-ticks", start="earliest") as sub:
        info = client.create_schedule("py-tick", "py-ticks", b"tick", every_s=1, missed="fire_once")
        expect(info.next_ts > 0 and not info.paused, f"created {info}")
        again = client.create_schedule("py-tick", "py-ticks", b"tick", every_s=1, missed="fire_once")
        expect(again.schedule_id == "py-tick", "a retried create is answered")
        expect_error(
            grpc.StatusCode.ALREADY_EXISTS,
            "schedule_id",
            lambda: client.create_schedule("py-tick", "py-ticks", b"other", every_s=1),
        )
        expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "schedule.cron",
            lambda: client.create_schedule("py-bad", "py-ticks", cron="0 0 25 * * *"),
        )
        d = next_delivery(sub, "an occurrence")
        expect(d.message_id.startswith("py-tick@"), f"occurrence id {d.message_id}")
        sub.ack(d)
        expect(len(client.get_schedule("py-tick", upcoming=3).upcoming_ts) == 3, "three upcoming")
        expect([s.schedule_id for s in client.list_schedules("py-ticks")] == ["py-tick"], "listed")
        expect(client.pause_schedule("py-tick").paused, "paused")
        expect(not client.resume_schedule("py-tick").paused, "resumed")
        expect(client.trigger_schedule("py-tick").startswith("py-tick@trigger-"), "triggered")
        client.delete_schedule("py-tick")
        expect_error(grpc.StatusCode.NOT_FOUND, "py-tick", lambda: client.get_schedule("py-tick"))
    print("ok: schedules")


def check_close_gives_back(client: Client) -> None:
    client.publish("sdk-close", "c-1", "unsettled")
    leaver = client.subscribe("leavers", "sdk-close", max_inflight=4, start="earliest")
    first = next_delivery(leaver, "before leaving")
    expect((first.message_id, first.attempt) == ("c-1", 1), f"first delivery: {first}")
    call = weakref.ref(leaver._call)
    started = time.monotonic()
    leaver.close()
    took = time.monotonic() - started
    # A call still referenced at interpreter exit is finalized then, and
    # grpc's finalizer can wait for ever on a lock its event thread held when
    # the interpreter stopped it: a script that closed everything would hang.
    expect(call() is None, "the closed stream's call is still referenced")
    # Before, close half-closed and waited 5 s for a stream end that never
    # came, holding what the server sent meanwhile from the group's others.
    expect(took < 2.0, f"close took {took:.2f} s")
    with client.subscribe("leavers", "sdk-close", max_inflight=4) as sub:
        again = sub.poll(2.0)
        expect(again is not None, "the unsettled delivery did not reach the next member within 2 s")
        expect((again.message_id, again.attempt) == ("c-1", 2), f"redelivery: {again}")
        sub.ack(again)
        sub.flush(WAIT_S)
    print(f"ok: close leaves at once ({took * 1000:.0f} ms); the next member gets what it held")


def check_replay(client: Client) -> None:
    start = now_ms()
    published = [
        client.publish("sdk-replay", "r-1", b"one", key="a", headers={"kind": "x"}),
        client.publish("sdk-replay", "r-2", b"two", key="a"),
        client.publish("sdk-replay", "r-3", b"three", key="b"),
    ]
    every = list(client.replay("sdk-replay", offsets=(0, 0)))
    expect(sorted(e.message_id for e in every) == ["r-1", "r-2", "r-3"], f"offsets: {every}")
    r1 = next(e for e in every if e.message_id == "r-1")
    expect((r1.partition, r1.offset) == published[0][:2], f"{r1} vs {published[0]}")
    expect((r1.payload, r1.key, r1.headers) == (b"one", "a", {"kind": "x"}), f"{r1}")
    expect(r1.publish_ts >= start and r1.due_ts == published[0].due_ts, f"{r1}")
    by_key = [e.message_id for e in client.replay("sdk-replay", published=(start, None), key="a")]
    expect(by_key == ["r-1", "r-2"], f"published since the start, key a: {by_key}")
    by_header = [e.message_id for e in client.replay("sdk-replay", due=(start - 1000, None), headers={"kind": "x"})]
    expect(by_header == ["r-1"], f"due, header kind=x: {by_header}")
    by_prefix = [e.message_id for e in client.replay("sdk-replay", offsets=(0, 0), message_id_prefix="r-3")]
    expect(by_prefix == ["r-3"], f"prefix r-3: {by_prefix}")
    stream = client.replay("sdk-replay", offsets=(0, 0))
    next(stream)
    stream.close()
    try:
        client.replay("sdk-replay")
        raise Failed("a replay without a range was not refused")
    except ValueError as err:
        expect("offsets, published or due" in str(err), str(err))
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, "offsets.to", lambda: list(client.replay(offsets=(5, 2))))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "offsets.to", lambda: list(client.replay("sdk-replay", offsets=(5, 2))))
    # A topic's events come in pages of 1000: several pages, every event once, in order.
    for first in range(0, 2500, 500):
        client.publish_batch([dict(topic="sdk-pages", message_id=f"p-{first + i}") for i in range(500)])
    paged = [(e.partition, e.offset, e.message_id) for e in client.replay("sdk-pages", offsets=(0, 0))]
    expect(len(paged) == 2500 and len({m for _, _, m in paged}) == 2500, f"{len(paged)} paged events")
    expect(paged == sorted(paged), "pages out of partition and offset order")
    everything = {e.message_id for e in client.replay(offsets=(0, 0)) if e.topic == "sdk-pages"}
    expect(everything == {m for _, _, m in paged}, "the stream without a topic disagrees with the pages")
    print(f"ok: replay by offsets, publish and due time with filters; a backward range: {err}")


def check_groups_and_dead_letters(client: Client) -> None:
    client.publish("sdk-dlq", "d-1", b"poison")
    with client.subscribe("dlq-workers", "sdk-dlq", start="earliest") as sub:
        for attempt in range(1, 6):
            d = next_delivery(sub, f"attempt {attempt}")
            expect((d.message_id, d.attempt) == ("d-1", attempt), f"{d}")
            sub.nack(d, delay_s=0.05)
        sub.flush(WAIT_S)
        expect(sub.poll(0.5) is None, "delivered again after its last attempt")
        group = client.describe_group("dlq-workers", "sdk-dlq")
        expect((group.members, group.dead_letters) == (1, 1), f"{group}")
        expect_error(
            grpc.StatusCode.FAILED_PRECONDITION, "", lambda: client.delete_group("dlq-workers", "sdk-dlq")
        )
        dead = client.dead_letters("dlq-workers", "sdk-dlq")
        expect([(x.message_id, x.payload, x.attempts) for x in dead] == [("d-1", b"poison", 5)], f"{dead}")
        expect(client.redrive("dlq-workers", "sdk-dlq", ["d-1"]) == 1, "redrive d-1")
        again = next_delivery(sub, "after the redrive")
        expect(again.message_id == "d-1", f"{again}")
        sub.ack(again)
        sub.flush(WAIT_S)
    expect(client.dead_letters("dlq-workers", "sdk-dlq") == [], "dead letters left after the redrive")
    names = [(g.name, g.topic) for g in client.list_groups("sdk-dlq")]
    expect(names == [("dlq-workers", "sdk-dlq")], f"groups: {names}")
    expect("sdk-dlq" in [t.name for t in client.list_topics()], "sdk-dlq not among the topics")
    client.seek_group("dlq-workers", "sdk-dlq", 0)
    with client.subscribe("dlq-workers", "sdk-dlq") as sub:
        replayed = next_delivery(sub, "after the seek to the start")
        expect(replayed.message_id == "d-1", f"{replayed}")
    # The server detaches a member when it sees its stream cancelled, a
    # moment after `close` returns.
    deadline = time.monotonic() + WAIT_S
    while client.describe_group("dlq-workers", "sdk-dlq").members > 0:
        expect(time.monotonic() < deadline, f"the member still counts {WAIT_S} s after close")
        time.sleep(0.02)
    deleted = client.delete_group("dlq-workers", "sdk-dlq")
    expect(deleted.dead_letters == 0, f"{deleted}")
    expect_error(grpc.StatusCode.NOT_FOUND, "", lambda: client.describe_group("dlq-workers", "sdk-dlq"))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "topic", lambda: client.list_groups("__bad"))
    print("ok: dead letter after 5 nacks, redriven; groups listed, described, sought, deleted")


def wait_inflight(client: Client, group: str, topic: str, n: int, within_s: float, what: str) -> None:
    """Waits until the server has `n` deliveries of `group` in flight (the rest recorded as settled)."""
    deadline = time.monotonic() + within_s
    while (inflight := client.describe_group(group, topic).inflight) != n:
        expect(time.monotonic() < deadline, f"{what}: {inflight} in flight after {within_s} s, not {n}")
        time.sleep(0.02)


def check_acks_go_out_together(client: Client) -> None:
    client.publish_batch([dict(topic="sdk-acks", message_id=f"a-{i}", payload=b"x") for i in range(8)])
    # A long linger: acks go out only when a batch fills, or on flush or close.
    sub = client.subscribe("ackers", "sdk-acks", start="earliest", ack_batch=4, ack_linger_s=10.0)
    with sub:
        got = [next_delivery(sub, f"delivery {i}") for i in range(8)]
        sub.ack(*got[:4])  # a full batch: sent at once
        wait_inflight(client, "ackers", "sdk-acks", 4, 5.0, "a full batch of acks")
        sub.ack(got[4])
        sub.nack(got[5], delay_s=60)  # waits for its redelivery: in flight
        totals = sub.flush(WAIT_S)  # sends the two waiting at once
        expect((totals.acked, totals.nacked, totals.unknown) == (5, 1, []), f"totals {totals}")
        sub.ack(*got[6:])
        expect(client.describe_group("ackers", "sdk-acks").inflight == 3, "acks went out before a full batch, flush or close")
        started = time.monotonic()
    took = time.monotonic() - started
    # Closing sent the last two at once, not after the linger; the next
    # member gets only the nacked one, and only after its delay.
    expect(took < 2.0, f"close took {took:.2f} s: the acks waited for the linger")
    with client.subscribe("ackers", "sdk-acks") as sub:
        expect(sub.poll(1.0) is None, "acks waiting at close were not sent")
    expect(client.describe_group("ackers", "sdk-acks").inflight == 1, "the nacked delivery is not waiting")
    client.publish("sdk-acks-linger", "l-1", b"x")
    with client.subscribe("quick", "sdk-acks-linger", start="earliest", ack_linger_s=0.1) as sub:
        sub.ack(next_delivery(sub, "the linger"))
        wait_inflight(client, "quick", "sdk-acks-linger", 0, 2.0, "an ack after its linger")
    for kwargs, field in ((dict(ack_batch=0), "ack_batch"), (dict(ack_linger_s=-1), "ack_linger_s")):
        expect_refused(lambda: client.subscribe("bad", "sdk-acks", **kwargs), field, f"subscribe {kwargs}")
    print("ok: acks and nacks go out together: a full batch at once, the rest on flush, close or the linger")


def check_window_of_one(client: Client) -> None:
    total = 20
    client.publish_batch([dict(topic="sdk-one", message_id=f"o-{i}", payload=b"x") for i in range(total)])
    # With the linger alone each ack would wait 10 s, and with it the next event.
    with client.subscribe("one", "sdk-one", start="earliest", max_inflight=1, ack_linger_s=10.0) as sub:
        seen = set()
        while len(seen) < total:
            d = sub.poll(5.0)
            expect(d is not None, f"stalled after {len(seen)} of {total}: the ack waited for the linger")
            expect(d.message_id not in seen, f"{d.message_id} twice")
            seen.add(d.message_id)
            sub.ack(d)
    print("ok: a member with a window of one acks at once and gets the next event")


def check_client_close_closes_subscriptions(addr: str) -> None:
    client = Client(addr, timeout_s=WAIT_S)
    client.publish("sdk-close-client", "cc-1", "held")
    sub = client.subscribe("holders", "sdk-close-client", start="earliest")
    next_delivery(sub, "before the client closes")
    call = weakref.ref(sub._call)
    client.close()
    expect(call() is None, "closing the client left its subscription's stream open")
    expect(sub.poll(0.0) is None and sub.ended, "the subscription did not end with its client")
    print("ok: closing the client closes its open subscriptions")


def check_quick_subscribe_and_close_keeps_the_connection(client: Client) -> None:
    """Members that subscribe and close at once, many in a row, on one
    connection: the server must not take that for an HTTP/2 rapid-reset flood
    and drop the connection (and every call on it, here a member that stays)."""
    with client.subscribe("stayer", "sdk-churn", reconnect=RetryPolicy.none()) as stayer:
        for i in range(600):
            client.subscribe(f"brief-{i}", "sdk-churn").close(timeout_s=0)
        client.publish("sdk-churn", "after-churn", b"x")
        d = next_delivery(stayer, "to the member that stayed")
        expect(d.message_id == "after-churn" and stayer.reconnects == 0, f"{d}, {stayer.reconnects} reconnects")
    print("ok: 600 members subscribed and closed at once; the connection and the member that stayed live on")


def publish_requests(http: str, rpc: str) -> float:
    """The server's count of `rpc` calls (`chronos_publish_requests_total`)."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=WAIT_S) as r:
        text = r.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("chronos_publish_requests_total{") and f'rpc="{rpc}"' in line
    )


def check_producer(client: Client, http: str) -> None:
    """8 threads send 250 events each through one producer, and one bad
    event: every good one is stored once, in few PublishBatch calls; the bad
    one alone fails, naming its field as a single publish would."""
    batches_before = publish_requests(http, "PublishBatch")
    singles_before = publish_requests(http, "Publish")
    futures = {}
    lock = threading.Lock()
    with client.producer() as producer:
        def send(t: int) -> None:
            for i in range(250):
                f = producer.send("sdk-producer", f"p-{t}-{i}", b"x" * 64, key=f"k{i % 7}")
                with lock:
                    futures[f"p-{t}-{i}"] = f

        threads = [threading.Thread(target=send, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        bad = producer.send("__bad", "p-bad", b"x")
        for th in threads:
            th.join()
        producer.flush(WAIT_S)
    refused = bad.exception(0)
    expect(isinstance(refused, ChronosError), f"the bad event: {refused!r}")
    expect(refused.code == grpc.StatusCode.INVALID_ARGUMENT and refused.field == "event.topic", f"{refused}")
    expect(refused.message.startswith("event.topic: "), refused.message)
    results = {mid: f.result(0) for mid, f in futures.items()}
    places = {(r.partition, r.offset) for r in results.values()}
    expect(len(results) == 2000 and len(places) == 2000, f"{len(results)} results, {len(places)} places")
    expect(not any(r.duplicate for r in results.values()), "a first send answered as a duplicate")
    batches = publish_requests(http, "PublishBatch") - batches_before
    singles = publish_requests(http, "Publish") - singles_before
    expect(1 <= batches <= 200 and singles == 0, f"{batches} PublishBatch and {singles} Publish calls")
    print(f"ok: producer: 2000 events from 8 threads in {batches:.0f} batches; the bad one alone refused: {refused}")


def check_producer_cancels(client: Client) -> None:
    """200 events due in an hour, then cancelled from 4 threads through one
    producer, with an unknown id and a bad topic among them: each cancel is
    answered as `Client.cancel` answers it, and nothing is left pending."""
    with client.producer() as producer:
        sent = [producer.send("sdk-pcancel", f"c-{i}", b"x", after=3600, key=f"k{i % 5}") for i in range(200)]
        for f in sent:
            f.result(WAIT_S)
        futures = []
        lock = threading.Lock()

        def cancel(t: int) -> None:
            for i in range(t, 200, 4):
                f = producer.cancel("sdk-pcancel", f"c-{i}", key=f"k{i % 5}")
                with lock:
                    futures.append(f)

        threads = [threading.Thread(target=cancel, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        unknown = producer.cancel("sdk-pcancel", "never")
        bad = producer.cancel("__bad", "c-0")
        for th in threads:
            th.join()
        producer.flush(WAIT_S)
    expect(all(f.result(0) is None for f in futures) and len(futures) == 200, "every cancel answered None")
    err = unknown.exception(0)
    expect(isinstance(err, ChronosError) and err.code == grpc.StatusCode.NOT_FOUND, f"unknown: {err!r}")
    err = bad.exception(0)
    expect(
        isinstance(err, ChronosError) and err.code == grpc.StatusCode.INVALID_ARGUMENT and err.field == "topic",
        f"bad: {err!r}",
    )
    pending = [t.pending for t in client.list_topics() if t.name == "sdk-pcancel"]
    expect(pending == [0], f"pending after the cancels: {pending}")
    print("ok: producer cancels: 200 from 4 threads, the unknown NOT_FOUND, the bad topic refused alone")


def dead_addr() -> str:
    """An address nothing listens on (a port just given back by the kernel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def check_retries_and_next_node(addr: str) -> None:
    dead = dead_addr()
    for bad in ("", [dead, " "]):
        expect_refused(lambda: Client(bad), "addr", f"Client({bad!r})")
    for kwargs, field in [({"max_attempts": 0}, "max_attempts"), ({"initial_backoff_s": 0}, "initial_backoff_s")]:
        expect_refused(lambda: RetryPolicy(**kwargs), field, f"RetryPolicy({kwargs})")
    # Nothing there: tried three times (waits of at least 25 + 50 ms), then the error.
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1)
    with Client(dead, retry=policy) as lone:
        started = time.monotonic()
        err = expect_error(grpc.StatusCode.UNAVAILABLE, "", lambda: lone.publish("sdk-retry", "r-0", b"x"))
        took = time.monotonic() - started
        expect(took >= 0.075, f"gave up after {took:.3f} s: not retried with backoff")
    print(f"ok: a dead node's publish retried, then {err.code.name}")
    # The first node is down: a publish goes on to the next and succeeds.
    with Client(f"{dead},{addr}", timeout_s=WAIT_S) as client:
        r = client.publish("sdk-retry", "r-1", b"x")
        expect(not r.duplicate and client.addr == addr, f"{r}, now on {client.addr}")
    # A call that is not retried still moves the client on.
    with Client([dead, addr], timeout_s=WAIT_S) as client:
        expect_error(grpc.StatusCode.UNAVAILABLE, "", lambda: client.trigger_schedule("sdk-retry-none"))
        expect(client.addr == addr, f"still on {client.addr} after a failed trigger")
        expect_error(grpc.StatusCode.NOT_FOUND, "", lambda: client.trigger_schedule("sdk-retry-none"))
    print("ok: bad addresses and policies refused; a down node's publish goes to the next; a trigger is not retried")


def check_fetch_and_ack(client: Client) -> None:
    client.publish_batch([dict(topic="sdk-fetch", message_id=f"f-{i}", payload=b"x") for i in range(5)])
    seen = []
    for want in (2, 2, 1):
        started = time.monotonic()
        got = client.fetch("fetchers", "sdk-fetch", max_deliveries=2, wait_s=1.0, start="earliest")
        took = time.monotonic() - started
        expect(len(got) == want, f"fetched {[d.message_id for d in got]}, wanted {want}")
        expect(all(d.attempt == 1 for d in got), f"handed out twice: {got}")
        expect(want == 1 or took < 1.0, f"a full fetch waited {took:.2f} s")
        seen += [d.message_id for d in got]
        totals = client.ack("fetchers", *got)
        expect(totals.acked == want and not totals.unknown, f"{totals}")
    expect(sorted(seen) == [f"f-{i}" for i in range(5)], f"{seen}")
    expect(client.fetch("fetchers", "sdk-fetch", max_deliveries=5, wait_s=0.3) == [], "left over")
    # Fetched and not acked: in flight for the ack timeout, then again.
    client.publish("sdk-fetch", "f-late", b"x")
    (held,) = client.fetch("fetchers", "sdk-fetch", max_deliveries=1, wait_s=2.0)
    expect(client.describe_group("fetchers", "sdk-fetch").inflight == 1, "not kept in flight")
    expect(client.fetch("fetchers", "sdk-fetch", max_deliveries=1, wait_s=0.3) == [], "handed out while held")
    again = client.ack("fetchers", held)
    expect(again.acked == 1 and client.ack("fetchers", held).unknown == [held.delivery_id], f"{again}")
    for kwargs, field in ((dict(max_deliveries=0), "max_deliveries"), (dict(wait_s=0), "wait_s")):
        expect_refused(lambda: client.fetch("fetchers", "sdk-fetch", **kwargs), field, f"fetch {kwargs}")
    print("ok: fetch returns up to max_deliveries or what came within wait_s; ack by id settles them")


class MutedProxy:
    """A TCP forwarder to `target` on a loopback port whose answers can be
    cut: while `muted`, what the server sends back is dropped (requests
    still arrive)."""

    def __init__(self, target: str):
        self.muted = threading.Event()
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self._listener.accept()
            except OSError:
                return
            host, port = self._target.rsplit(":", 1)
            outbound = socket.create_connection((host, int(port)))
            threading.Thread(target=self._pipe, args=(inbound, outbound, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(outbound, inbound, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if not (answers and self.muted.is_set()):
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def close(self) -> None:
        self._listener.close()


def check_delete_after_a_lost_answer(addr: str) -> None:
    proxy = MutedProxy(addr)
    try:
        with Client([proxy.addr, addr], timeout_s=1.0) as client:
            client.create_schedule("py-lost", "py-lost", every_s=60)
            proxy.muted.set()
            # The delete reaches the server, its answer does not; the retry on
            # the next node finds nothing to delete: done, not NOT_FOUND.
            client.delete_schedule("py-lost")
            expect(client.addr == addr, f"still on {client.addr}")
            expect_error(grpc.StatusCode.NOT_FOUND, "", lambda: client.get_schedule("py-lost"))
            expect_error(grpc.StatusCode.NOT_FOUND, "", lambda: client.delete_schedule("py-never-was"))
    finally:
        proxy.close()
    print("ok: a delete whose answer was lost succeeds when its retry finds the schedule gone")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", default=os.environ.get("CHRONOS_ADDR", "localhost:9000"))
    parser.add_argument("--http", default="localhost:8080", help="the server's HTTP address (for /metrics)")
    args = parser.parse_args()
    with Client(args.addr, timeout_s=WAIT_S) as client:
        try:
            check_nack_redelivers(client)
            check_bad_input(client)
            check_publish_batch_and_cancel(client)
            check_schedules(client)
            check_close_gives_back(client)
            check_replay(client)
            check_groups_and_dead_letters(client)
            check_acks_go_out_together(client)
            check_window_of_one(client)
            check_fetch_and_ack(client)
            check_client_close_closes_subscriptions(args.addr)
            check_quick_subscribe_and_close_keeps_the_connection(client)
            check_retries_and_next_node(args.addr)
            check_delete_after_a_lost_answer(args.addr)
            check_producer(client, args.http)
            check_producer_cancels(client)
        except (Failed, ChronosError, TimeoutError) as err:
            print(f"FAIL: {err}")
            return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
