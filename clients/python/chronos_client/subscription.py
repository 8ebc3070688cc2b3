"""A consumer-group member over the bidirectional `Consume` stream.

Requests (the subscribe, then acks, nacks and credit grants) go out through a
queue that feeds the stream's request iterator, so acks travel in-band on the
same stream. When the stream breaks with UNAVAILABLE (a node down, a
partition between leaders) or the server ends it, the member subscribes
again with backoff, on the client's next node, as the Rust SDK does; each
such stream is a session with a queue of its own. Acks and nacks are gathered and sent together (`ack_batch` of
them, or what came within `ack_linger_s` of the first), as the Rust SDK does:
a message each way per ack held a consumer to ~2.9 K deliveries/s. A reader
thread takes responses off the stream: deliveries go to a queue the caller
drains (bounded by the server: a member never holds more unacked deliveries
than its `max_inflight`), ack answers update the counters that `flush` waits
on.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Union

import grpc

from ._connection import RETRYABLE, Budget, Connection, RetryPolicy
from ._convert import When, epoch_ms, event_fields
from ._proto import events_pb2
from .errors import ChronosError

# Ends the request iterator or marks the end of responses.
_END = object()
# Tells the request iterator that acks wait: send them within the linger.
_ACKS_WAIT = object()
# Tells the request iterator to send the waiting acks now.
_ACKS_NOW = object()
# ... and that someone waits for their answer (a flush, a close): the server
# records them at once instead of gathering them with later ones.
_ACKS_FLUSH = object()


@dataclass(frozen=True)
class Delivery:
    """One event handed to this member. Settle it with `Subscription.ack` or `nack`."""

    delivery_id: str
    topic: str
    message_id: str
    payload: bytes
    key: str
    headers: Dict[str, str]
    #: When the publisher asked for it, ms since the epoch (0 = at publish).
    schedule_ts: int
    #: When it became due: max(schedule_ts, the server's clock at publish).
    due_ts: int
    partition: int
    offset: int
    #: 1 on first delivery, incremented on each redelivery.
    attempt: int

    @classmethod
    def from_pb(cls, d: events_pb2.Delivery) -> "Delivery":
        ev = d.event
        return cls(
            delivery_id=d.delivery_id,
            **event_fields(ev),
            due_ts=d.due_ts,
            partition=d.partition,
            offset=d.offset,
            attempt=d.attempt,
        )


@dataclass
class AckTotals:
    """What the server answered to this member's acks and nacks so far."""

    acked: int = 0
    nacked: int = 0
    #: Delivery ids that were no longer in flight (already settled, expired, unknown).
    unknown: List[str] = field(default_factory=list)


def ack_items(deliveries, nack: bool, delay_s: Optional[float]) -> List[events_pb2.AckItem]:
    """`AckItem`s settling `deliveries` (each a `Delivery` or its id); a nack
    waits `delay_s` (None or 0: the server's backoff)."""
    delay_ms = math.ceil(delay_s * 1000) if delay_s else 0
    return [
        events_pb2.AckItem(
            delivery_id=d.delivery_id if isinstance(d, Delivery) else d,
            nack=nack,
            nack_delay_ms=delay_ms,
        )
        for d in deliveries
    ]


def start_fields(start: Union[str, When]) -> dict:
    """`SubscribeRequest`'s start fields for "latest", "earliest" or a time."""
    if start == "latest":
        return {"start": events_pb2.START_POSITION_LATEST}
    if start == "earliest":
        return {"start": events_pb2.START_POSITION_EARLIEST}
    if isinstance(start, str):
        raise ValueError(f'start: {start!r} is not "latest", "earliest" or a time')
    return {"start": events_pb2.START_POSITION_TIMESTAMP, "start_ts": epoch_ms(start, "start")}


class _ClosedCall:
    """Stands in for a finished call: `close` stays idempotent."""

    def cancel(self) -> None:
        pass


_CLOSED = _ClosedCall()

#: A subscription's default: subscribe again for up to two minutes.
RECONNECT = RetryPolicy(max_attempts=100, max_elapsed_s=120.0, initial_backoff_s=0.1, max_backoff_s=2.0)


class Subscription:
    """A member of `group` for `topic`; made by `Client.subscribe`.

    Iterate over it for deliveries (blocks until one arrives; stops when the
    stream ends; raises `ChronosError` when the server ends it with an error),
    or call `poll(timeout_s)`. Settle each delivery with `ack` or `nack`; what
    is not settled within the server's `delivery.ack_timeout` is redelivered.
    `close()` (or leaving a `with` block) detaches the member: its unsettled
    deliveries go to other members.

    If the stream breaks with UNAVAILABLE or the server ends it, the member
    subscribes again (within `reconnect`; `reconnects` counts how often) and
    the server redelivers what it held unacked; acks not yet sent go out on
    the new stream. Only when the budget is spent does the error reach the
    caller.
    """

    def __init__(
        self,
        conn: Connection,
        request: events_pb2.SubscribeRequest,
        ack_batch: int = 64,
        ack_linger_s: float = 0.005,
        reconnect: RetryPolicy = RECONNECT,
    ):
        if ack_batch < 1:
            raise ValueError(f"ack_batch: {ack_batch} must be at least 1")
        if not 0 <= ack_linger_s <= 10:
            raise ValueError(f"ack_linger_s: {ack_linger_s} must be between 0 and 10 s")
        if not isinstance(reconnect, RetryPolicy):
            raise ValueError(f"reconnect: {reconnect!r} is not a RetryPolicy")
        self.group = request.consumer_group
        self.topic = request.topic
        #: How many times the member subscribed again after its stream broke.
        self.reconnects = 0
        self._conn = conn
        self._subscribe = events_pb2.ConsumeRequest(subscribe=request)
        self._reconnect = reconnect
        # Settlements that go out at once: at most half the window, so a member
        # holding a small window (1: one event at a time) is not left without
        # credit for the linger (0: the server's default window, unknown here).
        window = request.max_inflight
        self._ack_batch = min(ack_batch, max(1, window // 2)) if window else ack_batch
        self._ack_linger_s = ack_linger_s
        self._deliveries: "queue.SimpleQueue[object]" = queue.SimpleQueue()
        self._cond = threading.Condition()
        # The current session's requests (under `_cond`; replaced per session).
        self._requests: "queue.SimpleQueue[object]" = queue.SimpleQueue()
        # Acks and nacks not yet handed to a stream (under `_cond`).
        self._waiting: List[events_pb2.AckItem] = []
        # Counted in items, not requests: the server answers each request
        # with how many it acked, nacked and did not know. Items on a stream
        # that broke before answering count as answered and as lost.
        self._items_sent = 0
        self._items_answered = 0
        self._items_lost = 0
        self._totals = AckTotals()
        self._ended: Optional[object] = None  # _END or a ChronosError, once seen by the caller
        self._closing = False
        self._closed = threading.Event()  # wakes a wait between sessions
        self._stream_error: Optional[ChronosError] = None
        self._done = False  # the last session is over
        self._call = None  # the current session's call (under `_cond`)
        self._addr = conn.current()[1].addr  # the current session's node
        self._reader = threading.Thread(target=self._run, name=f"chronos-consume-{self.group}", daemon=True)
        self._reader.start()

    # -- receiving ---------------------------------------------------------

    def __iter__(self) -> Iterator[Delivery]:
        return self

    def __next__(self) -> Delivery:
        d = self._take(block=True, timeout_s=None)
        if d is None:
            raise StopIteration
        return d

    def poll(self, timeout_s: float) -> Optional[Delivery]:
        """The next delivery, or None if none arrives within `timeout_s` or the stream has ended.

        Raises `ChronosError` if the server ended the stream with an error
        (e.g. INVALID_ARGUMENT for a bad group name, UNAVAILABLE when a
        partition stopped serving this member: subscribe again).
        """
        return self._take(block=True, timeout_s=max(0.0, timeout_s))

    @property
    def addr(self) -> str:
        """The node (`host:port`) of the current stream, or of the last one."""
        return self._addr

    @property
    def ended(self) -> bool:
        """True once the stream is over and every delivery on it has been taken."""
        return self._ended is not None

    def _take(self, block: bool, timeout_s: Optional[float]) -> Optional[Delivery]:
        if self._ended is None:
            try:
                item = self._deliveries.get(block=block, timeout=timeout_s)
            except queue.Empty:
                return None
            if isinstance(item, Delivery):
                return item
            self._ended = item
        if isinstance(self._ended, ChronosError):
            raise self._ended
        return None

    # -- settling ------------------------------------------------------------

    def ack(self, delivery: Union[Delivery, str], *more: Union[Delivery, str]) -> None:
        """Acknowledges deliveries (or delivery ids), in-band; the event is done for this group.

        Returns at once; `flush` waits until the server has recorded them.
        """
        self._settle((delivery, *more), nack=False, delay_s=None)

    def nack(self, delivery: Union[Delivery, str], delay_s: Optional[float] = None) -> None:
        """Asks for a redelivery after `delay_s` seconds (None or 0: the server's backoff policy)."""
        if delay_s is not None and delay_s < 0:
            raise ValueError(f"delay_s: {delay_s} is negative")
        self._settle((delivery,), nack=True, delay_s=delay_s)

    def grant(self, credits: int) -> None:
        """Lets the server send `credits` more deliveries beyond `max_inflight`."""
        if credits <= 0:
            raise ValueError(f"credits: {credits} must be positive")
        self._send(events_pb2.ConsumeRequest(credit=credits))

    def flush(self, timeout_s: float = 10.0) -> AckTotals:
        """Waits until the server has answered every ack and nack sent so far.

        Returns the totals; raises `ChronosError` if the stream failed first
        (UNAVAILABLE if it broke before answering some: their events are
        redelivered) and `TimeoutError` if the answers did not all come
        within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            lost_before = self._items_lost
            self._requests.put(_ACKS_FLUSH)
            while self._items_answered < self._items_sent:
                if self._stream_error is not None:
                    raise self._stream_error
                if self._done:
                    raise ChronosError(grpc.StatusCode.CANCELLED, "the stream ended before every ack was answered")
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = self._items_sent - self._items_answered
                    raise TimeoutError(f"{missing} ack(s) unanswered after {timeout_s} s")
                self._cond.wait(left)
            lost = self._items_lost - lost_before
            if lost:
                raise ChronosError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the stream broke before {lost} ack(s) were answered; their events are redelivered",
                )
            return AckTotals(self._totals.acked, self._totals.nacked, list(self._totals.unknown))

    def _settle(self, deliveries, nack: bool, delay_s: Optional[float]) -> None:
        items = ack_items(deliveries, nack, delay_s)
        self._check_open()
        with self._cond:
            first = not self._waiting
            self._waiting.extend(items)
            self._items_sent += len(items)
            # Under the lock: a marker goes to the session that will take the
            # acks (a new session starts by sending what waits).
            if len(self._waiting) >= self._ack_batch:
                self._requests.put(_ACKS_NOW)
            elif first:
                self._requests.put(_ACKS_WAIT)

    def _take_waiting(self, requests, wait: bool = False) -> Optional[events_pb2.ConsumeRequest]:
        """The acks and nacks not yet sent, as one request (None if none, or
        if `requests` is no longer the current session's); `wait`: the caller
        waits for the answer."""
        with self._cond:
            if requests is not self._requests:
                return None
            items, self._waiting = self._waiting, []
        if not items:
            return None
        # An empty consumer_group means this stream's group.
        return events_pb2.ConsumeRequest(ack=events_pb2.AckRequest(items=items, wait=wait))

    def _send(self, req: events_pb2.ConsumeRequest) -> None:
        self._check_open()
        with self._cond:
            self._requests.put(req)

    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError(f"subscription of group {self.group!r} is closed")

    # -- lifetime ------------------------------------------------------------

    def close(self, timeout_s: float = 5.0) -> None:
        """Leaves the group: waits (at most `timeout_s`) for the server to
        answer the acks and nacks already sent, then cancels the stream. The
        server detaches the member at once and gives the deliveries it holds
        unsettled (taken or not) to other members. Idempotent.

        Cancelling rather than half-closing: the server keeps delivering on a
        half-closed stream (a client may ack with `Ack` calls instead), and
        deliveries sent while this member waited would be held from others.
        """
        if not self._closing:
            with self._cond:
                self._closing = True
                self._requests.put(_ACKS_FLUSH)
            self._closed.set()
            self._wait_answered(timeout_s)
            with self._cond:
                self._requests.put(_END)
        with self._cond:
            call = self._call
        if call is not None:
            call.cancel()
        self._reader.join(timeout_s)
        if not self._reader.is_alive():
            # Finalizes the call now. Left to interpreter exit, grpc's
            # finalizer could wait for ever on a lock that its (daemon) event
            # thread held when the interpreter stopped it.
            self._call = _CLOSED

    def _wait_answered(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._items_answered < self._items_sent and not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request_iter(self, requests):
        """One session's requests: the subscribe, then what the caller sends."""
        yield self._subscribe
        send_at: Optional[float] = None  # when the waiting acks go out
        while True:
            try:
                wait = None if send_at is None else max(0.0, send_at - time.monotonic())
                item = requests.get(timeout=wait)
            except queue.Empty:
                item = _ACKS_NOW
            if item is _ACKS_WAIT:
                if send_at is None:
                    send_at = time.monotonic() + self._ack_linger_s
                continue
            # Anything else goes after the acks before it.
            send_at = None
            acks = self._take_waiting(requests, wait=item is _ACKS_FLUSH)
            if acks is not None:
                yield acks
            if item is _END:
                return
            if item is not _ACKS_NOW and item is not _ACKS_FLUSH:
                yield item

    def _run(self) -> None:
        """Sessions, one after another, until the caller closes, the server
        refuses, or the reconnect budget is spent."""
        budget = Budget(self._reconnect)
        end: object = _END
        try:
            while True:
                with self._cond:
                    if self._closing:
                        break
                    generation, node = self._conn.current()
                    requests: "queue.SimpleQueue[object]" = queue.SimpleQueue()
                    # Acks left from a broken session go out first.
                    requests.put(_ACKS_NOW)
                    self._requests = requests
                    self._addr = node.addr
                    self._call = node.events.Consume(self._request_iter(requests))
                    call = self._call
                started = time.monotonic()
                err, answered = self._session(call, requests)
                if self._closing:
                    break
                if err is None:
                    err = ChronosError(grpc.StatusCode.UNAVAILABLE, "the server ended the consume stream")
                # A session that got answers, or lasted, was a subscribe that worked.
                if answered or time.monotonic() - started >= self._reconnect.max_backoff_s:
                    budget = Budget(self._reconnect)
                wait = budget.next_wait() if err.code in RETRYABLE else None
                if wait is None:
                    end = err
                    break
                self._conn.fail_over(generation, err)
                if self._closed.wait(wait):
                    break
                self.reconnects += 1
        finally:
            with self._cond:
                self._done = True
                if isinstance(end, ChronosError):
                    self._stream_error = end
                self._cond.notify_all()
            self._deliveries.put(end)

    def _session(self, call, requests) -> "tuple[Optional[ChronosError], bool]":
        """Reads one stream to its end: the error that ended it (None for a
        clean end or a cancel by `close`), and whether anything came."""
        answered = False
        err: Optional[ChronosError] = None
        try:
            for resp in call:
                answered = True
                kind = resp.WhichOneof("kind")
                if kind == "delivery":
                    self._deliveries.put(Delivery.from_pb(resp.delivery))
                elif kind == "ack":
                    with self._cond:
                        self._items_answered += resp.ack.acked + resp.ack.nacked + len(resp.ack.unknown)
                        self._totals.acked += resp.ack.acked
                        self._totals.nacked += resp.ack.nacked
                        self._totals.unknown.extend(resp.ack.unknown)
                        self._cond.notify_all()
        except grpc.RpcError as rpc_err:
            if not (self._closing and rpc_err.code() == grpc.StatusCode.CANCELLED):
                err = ChronosError.from_rpc_error(rpc_err)
            # The error is the call itself, and its traceback holds a frame
            # that holds the call: without this cycle broken the call lives
            # until the interpreter exits (see `close`).
            rpc_err.__traceback__ = None
        finally:
            with self._cond:
                # Ends this session's request iterator; acks handed to this
                # stream and not answered are lost (their events are
                # redelivered); those still waiting go on the next.
                requests.put(_END)
                if requests is self._requests:
                    self._requests = queue.SimpleQueue()
                lost = self._items_sent - self._items_answered - len(self._waiting)
                if lost > 0:
                    self._items_answered += lost
                    self._items_lost += lost
                self._cond.notify_all()
        return err, answered
