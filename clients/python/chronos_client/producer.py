"""`Producer`: events (and cancels) from any number of threads gathered into
`PublishBatch` (and `CancelBatch`) calls.

One publish per call costs grpc-python a round trip and ~200 µs of the
caller's CPU; a batch of a thousand costs about as much as a few. `send`
queues an event and returns a `Future`; a gathering thread takes what is
queued (up to `max_batch` events, or what came within `linger_s` of the
first) and hands each batch to a pool of `max_inflight_batches` sender
threads, which answers every event's future with
its own result — or its own error, as the Rust SDK's producer does.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import List, Mapping, Optional, Tuple

import grpc

from . import _convert
from ._convert import Payload, When, publish_result
from ._proto import events_pb2
from .errors import ChronosError

# Stops the gathering thread.
_STOP = object()

Queued = Tuple[events_pb2.Event, Future]


class Producer:
    """Publishes events in batches; made by `Client.producer`.

    `send(...)` takes `Client.publish`'s arguments (but `reschedule`) and
    returns a `concurrent.futures.Future` of the event's `PublishResult`. It
    blocks only when `max_queued` events wait to go out. An event the server
    refuses (INVALID_ARGUMENT naming it) fails its own future, with the field
    named as for a single publish (`event.topic`), and the rest of its batch
    goes again; a batch refused as a whole (e.g. its total size) is sent an
    event at a time. Batches are retried like any idempotent call (see
    `Client`). With several batches in flight, events of one key may be
    stored in another order than sent (`max_inflight_batches=1` keeps it).
    `flush()` waits until everything sent so far is answered; `close()` (or
    leaving a `with` block) flushes and stops.
    """

    def __init__(
        self,
        client,
        linger_s: float = 0.005,
        max_batch: int = 1000,
        max_inflight_batches: int = 4,
        max_queued: int = 10_000,
    ):
        if not 0 <= linger_s <= 10:
            raise ValueError(f"linger_s: {linger_s} must be between 0 and 10 s")
        if max_batch < 1:
            raise ValueError(f"max_batch: {max_batch} must be at least 1")
        if max_inflight_batches < 1:
            raise ValueError(f"max_inflight_batches: {max_inflight_batches} must be at least 1")
        if max_queued < 1:
            raise ValueError(f"max_queued: {max_queued} must be at least 1")
        self._client = client
        self._linger_s = linger_s
        self._max_batch = max_batch
        self._queue: "queue.Queue[object]" = queue.Queue(maxsize=max_queued)
        self._slots = threading.Semaphore(max_inflight_batches)
        self._senders = ThreadPoolExecutor(max_inflight_batches, thread_name_prefix="chronos-producer-send")
        self._cond = threading.Condition()
        self._unanswered = 0  # events sent and not yet answered (under `_cond`)
        self._closed = False
        self._gatherer = threading.Thread(target=self._gather, name="chronos-producer", daemon=True)
        self._gatherer.start()

    def send(
        self,
        topic: str,
        message_id: str,
        payload: Payload = b"",
        at: Optional[When] = None,
        after: Optional[float] = None,
        key: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> "Future":
        """Queues one event; the future resolves to its `PublishResult` once it
        is durable, or raises its `ChronosError`."""
        ev = _convert.event(topic, message_id, payload, at, after, key, headers)
        if self._closed:
            raise RuntimeError("the producer is closed")
        done: Future = Future()
        with self._cond:
            self._unanswered += 1
        self._queue.put((ev, done))
        return done

    def cancel(self, topic: str, message_id: str, key: Optional[str] = None) -> "Future":
        """Queues a cancel, sent with other threads' cancels in one
        `CancelBatch`; the future resolves to None once the event will not
        fire (cancelled now or before), or raises `ChronosError` NOT_FOUND if
        unknown, FAILED_PRECONDITION if it already fired, as `Client.cancel`."""
        req = events_pb2.CancelRequest(topic=topic, message_id=message_id, key=key or "")
        if self._closed:
            raise RuntimeError("the producer is closed")
        done: Future = Future()
        with self._cond:
            self._unanswered += 1
        self._queue.put((req, done))
        return done

    def flush(self, timeout_s: Optional[float] = None) -> None:
        """Waits until every event sent so far is answered (TimeoutError past `timeout_s`)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._unanswered == 0, timeout_s):
                raise TimeoutError(f"{self._unanswered} event(s) unanswered after {timeout_s} s")

    def close(self, timeout_s: Optional[float] = None) -> None:
        """Sends what is queued, waits for the answers, stops. Idempotent."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self.flush(timeout_s)
        self._gatherer.join(timeout_s)
        self._senders.shutdown(wait=False)

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _gather(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self._linger_s
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            publishes = [q for q in batch if isinstance(q[0], events_pb2.Event)]
            cancels = [q for q in batch if not isinstance(q[0], events_pb2.Event)]
            for send, part in ((self._publish, publishes), (self._cancel, cancels)):
                if part:
                    self._slots.acquire()
                    self._senders.submit(self._send_batch, send, part)

    def _send_batch(self, send, batch: List[Queued]) -> None:
        n = len(batch)  # `send` takes refused items out of `batch`
        try:
            send(batch)
        except BaseException as err:  # noqa: BLE001 - every future must be answered
            for _, done in batch:
                if not done.done():
                    done.set_exception(err)
        finally:
            self._slots.release()
            with self._cond:
                self._unanswered -= n
                self._cond.notify_all()

    def _publish(self, batch: List[Queued]) -> None:
        client = self._client
        # Each round answers at least one event, so this ends.
        while batch:
            req = events_pb2.PublishBatchRequest(events=[ev for ev, _ in batch])
            try:
                resp = client._unary(client._events.PublishBatch, req)
            except ChronosError as err:
                if err.code != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                if not _refuse_blamed(err, batch, "events", "event."):
                    # Refused as a whole (e.g. its size): each event on its own.
                    for ev, done in batch:
                        _answer_alone(client, ev, done)
                    return
                continue
            if len(resp.results) != len(batch):
                raise ChronosError(
                    grpc.StatusCode.INTERNAL,
                    f"PublishBatch of {len(batch)} events answered {len(resp.results)} results",
                )
            for (_, done), r in zip(batch, resp.results):
                done.set_result(publish_result(r))
            return


    def _cancel(self, batch: List[Queued]) -> None:
        client = self._client
        # Each round answers at least one cancel, so this ends.
        while batch:
            req = events_pb2.CancelBatchRequest(cancels=[c for c, _ in batch])
            try:
                resp = client._unary(client._events.CancelBatch, req)
            except ChronosError as err:
                if err.code != grpc.StatusCode.INVALID_ARGUMENT or not _refuse_blamed(err, batch, "cancels", ""):
                    raise
                continue
            if len(resp.results) != len(batch):
                raise ChronosError(
                    grpc.StatusCode.INTERNAL,
                    f"CancelBatch of {len(batch)} cancels answered {len(resp.results)} results",
                )
            for (c, done), r in zip(batch, resp.results):
                refused = _cancel_refused(c, r)
                if refused is None:
                    done.set_result(None)
                else:
                    done.set_exception(refused)
            return


def _cancel_refused(c: events_pb2.CancelRequest, r) -> Optional[ChronosError]:
    """A batch's cancel result as `Cancel` answers it: None when cancelled."""
    if r.status == events_pb2.CANCEL_STATUS_NOT_FOUND:
        return ChronosError(
            grpc.StatusCode.NOT_FOUND,
            f"no event {c.message_id!r} on topic {c.topic!r} (within the dedup window); "
            "if it was published with a key, pass that key",
        )
    if r.status == events_pb2.CANCEL_STATUS_ALREADY_FIRED:
        return ChronosError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"event {c.message_id!r} on topic {c.topic!r} (offset {r.offset}) already fired",
        )
    return None


def _answer_alone(client, ev: events_pb2.Event, done: Future) -> None:
    try:
        r = client._unary(client._events.Publish, events_pb2.PublishRequest(event=ev))
        done.set_result(publish_result(r))
    except ChronosError as err:
        done.set_exception(err)


def _refuse_blamed(err: ChronosError, batch: List[Queued], items: str, item: str) -> bool:
    """Fails the one queued item an INVALID_ARGUMENT names (as a single call
    would have been refused) and takes it out of `batch`; False if it names none."""
    blamed = _blamed(err, len(batch), items, item)
    if blamed is None:
        return False
    i, field = blamed
    _, done = batch.pop(i)
    why = err.message.split(": ", 1)[-1]
    done.set_exception(ChronosError(err.code, f"{field}: {why}", field=field))
    return True


def _blamed(err: ChronosError, n: int, items: str = "events", item: str = "event.") -> Optional[Tuple[int, str]]:
    """The field `events[3].topic` → (3, "event.topic"), if 3 < n (for
    `cancels[3].topic`, with `item` "", → (3, "topic"))."""
    field = err.field or ""
    if not field.startswith(items + "["):
        return None
    index, sep, rest = field[len(items) + 1 :].partition("].")
    if not sep or not index.isdigit() or int(index) >= n:
        return None
    return int(index), f"{item}{rest}"
