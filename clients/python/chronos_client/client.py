"""`Client`: publish, cancel, subscribe, replay and administer against one Chronos node."""

from __future__ import annotations

import weakref
from typing import Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import grpc

from . import _connection, _convert
from . import replay as _replay
from ._convert import Payload, PublishResult, When, publish_result
from ._connection import RetryPolicy, Rpc, Service
from ._proto import events_pb2
from .admin import Admin
from .errors import ChronosError
from .replay import StoredEvent
from .producer import Producer
from .schedules import Schedules
from .subscription import RECONNECT, AckTotals, Delivery, Subscription, ack_items, start_fields


class CancelResult(NamedTuple):
    """The partition and offset of the event that will no longer fire."""

    partition: int
    offset: int


class CancelOutcome(NamedTuple):
    """What one cancel of `cancel_batch` found: `status` is "cancelled",
    "already_cancelled", "not_found" or "already_fired"."""

    message_id: str
    status: str
    partition: int
    offset: int


class GroupState(NamedTuple):
    """Where one consumer group is with a fired event."""

    group: str
    #: "waiting", "in_flight", "retry_wait", "dead", "acked" or "not_for_group".
    status: str
    attempts: int
    #: In flight: the ack deadline; retry_wait: the redelivery time; dead: when.
    at_ts: int
    #: Dead: why.
    reason: str


class EventInfo(NamedTuple):
    """Where one event stands (`Client.describe`)."""

    #: "pending", "fired" or "cancelled".
    status: str
    partition: int
    offset: int
    due_ts: int
    #: When it fired (0 when not fired or not known).
    fire_ts: int
    #: The stored payload, while the event is stored (None after).
    payload: Optional[bytes]
    #: Each consumer group of the topic, once fired.
    groups: List[GroupState]


def _status_name(enum_type, value: int, prefix: str) -> str:
    return enum_type.Name(value)[len(prefix):].lower()


class _Bearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        metadata = list(details.metadata or []) + [self._header]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


def _read(field: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{field}: {path}: {e.strerror}") from None


class Client(Schedules, Admin):
    """A connection to a Chronos node's `EventService` and `AdminService`.

    `addr` is `host:port`, or several (a list, or comma-separated) of one
    cluster: calls go to the first, and a call that fails with UNAVAILABLE
    or DEADLINE_EXCEEDED (a node down, a partition between leaders) is tried
    again with backoff within `retry`, on the node the server named as
    leader or else the next address. Only idempotent calls are retried; a
    publish is (the server deduplicates by topic and message id), a
    `trigger_schedule`, `redrive` or `delete_group` is not. Plaintext gRPC unless `tls_ca` names the CA
    certificate (PEM file) that signed the server's; `tls_cert` and `tls_key`
    add a client certificate, `tls_domain` the name the server's certificate
    carries when it is not the host dialled. `token` is sent as a bearer
    token with every call. Every attempt of a unary call has a deadline of
    `timeout_s` seconds; failures raise `ChronosError`. Use as a context manager, or call
    `close()`.
    """

    def __init__(
        self,
        addr: Union[str, Sequence[str]] = "localhost:9000",
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        tls_domain: Optional[str] = None,
        token: Optional[str] = None,
    ):
        addrs = _connection.addresses(addr)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: {timeout_s} must be positive")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert: a client certificate needs its key (give both or neither)")
        if token is not None and (not token or not token.isascii() or any(c.isspace() for c in token)):
            raise ValueError("token: must be printable ASCII without spaces")
        if tls_ca is None and tls_cert is not None:
            raise ValueError("tls_cert: a client certificate needs tls_ca")
        creds = None
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read("tls_ca", tls_ca),
                private_key=_read("tls_key", tls_key) if tls_key else None,
                certificate_chain=_read("tls_cert", tls_cert) if tls_cert else None,
            )
        options = list(_connection.CHANNEL_OPTIONS)
        if tls_domain:
            options.append(("grpc.ssl_target_name_override", tls_domain))
        bearer = _Bearer(token) if token is not None else None

        def open_channel(target: str):
            if creds is None:
                raw = grpc.insecure_channel(target, options=options)
            else:
                raw = grpc.secure_channel(target, creds, options=options)
            return raw, grpc.intercept_channel(raw, bearer) if bearer else raw

        self.timeout_s = timeout_s
        self._conn = _connection.Connection(addrs, open_channel, retry)
        self._subscriptions: "weakref.WeakSet[Subscription]" = weakref.WeakSet()

    @property
    def addr(self) -> str:
        """The node calls go to now (`host:port`)."""
        return self._conn.current()[1].addr

    def close(self) -> None:
        """Closes the subscriptions still open (see `Subscription.close`), then the channels."""
        for sub in list(self._subscriptions):
            sub.close()
        self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def publish(
        self,
        topic: str,
        message_id: str,
        payload: Payload = b"",
        at: Optional[When] = None,
        after: Optional[float] = None,
        key: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        reschedule: bool = False,
    ) -> PublishResult:
        """Stores one event durably and schedules it; returns once it is on disk.

        `at` is when to deliver it (an aware `datetime` or epoch ms), `after`
        the same as seconds from now; neither means now. `key` routes events
        to one partition (default: `message_id`). Publishing the same
        (topic, message_id) again answers with the original and
        `duplicate=True`, unless `reschedule` moves the still pending event.
        """
        ev = _convert.event(topic, message_id, payload, at, after, key, headers)
        req = events_pb2.PublishRequest(event=ev, reschedule=reschedule)
        return publish_result(self._unary(self._events.Publish, req))

    def publish_batch(self, events: Iterable[Mapping]) -> List[PublishResult]:
        """Stores many events; each is a dict of `publish`'s arguments
        (`topic`, `message_id`, `payload`, `at`, `after`, `key`, `headers`).

        Returns one result per event, in order. Each partition's share is
        stored atomically; one invalid event fails the whole call.
        """
        req = events_pb2.PublishBatchRequest(events=[_convert.event(**e) for e in events])
        return [publish_result(r) for r in self._unary(self._events.PublishBatch, req).results]

    def cancel(self, topic: str, message_id: str, key: Optional[str] = None) -> CancelResult:
        """Stops a pending event from firing. `key`: the routing key it was published with.

        Raises `ChronosError` NOT_FOUND if unknown, FAILED_PRECONDITION if it already fired.
        """
        req = events_pb2.CancelRequest(topic=topic, message_id=message_id, key=key or "")
        r = self._unary(self._events.Cancel, req)
        return CancelResult(r.partition, r.offset)

    def cancel_batch(self, cancels: Iterable[Mapping]) -> List[CancelOutcome]:
        """Stops many pending events from firing in one call; each cancel is a
        dict of `cancel`'s arguments (`topic`, `message_id`, `key`).

        Returns one `CancelOutcome` per cancel, in order: an unknown or fired
        event is an outcome here, not an error. Safe to retry.
        """
        req = events_pb2.CancelBatchRequest(
            cancels=[
                events_pb2.CancelRequest(topic=c["topic"], message_id=c["message_id"], key=c.get("key") or "")
                for c in cancels
            ]
        )
        return [
            CancelOutcome(
                r.message_id,
                _status_name(events_pb2.CancelStatus, r.status, "CANCEL_STATUS_"),
                r.partition,
                r.offset,
            )
            for r in self._unary(self._events.CancelBatch, req).results
        ]

    def describe(self, topic: str, message_id: str, key: Optional[str] = None) -> EventInfo:
        """Where an event stands: pending, fired or cancelled, and once fired
        where each consumer group of its topic is with it.

        Raises `ChronosError` NOT_FOUND if unknown or past the dedup window.
        """
        req = events_pb2.DescribeEventRequest(topic=topic, message_id=message_id, key=key or "")
        r = self._unary(self._events.DescribeEvent, req)
        groups = [
            GroupState(
                g.group,
                _status_name(events_pb2.DeliveryStatus, g.status, "DELIVERY_STATUS_"),
                g.attempts,
                g.at_ts,
                g.reason,
            )
            for g in r.groups
        ]
        return EventInfo(
            _status_name(events_pb2.EventStatus, r.status, "EVENT_STATUS_"),
            r.partition,
            r.offset,
            r.due_ts,
            r.fire_ts,
            r.event.payload if r.HasField("event") else None,
            groups,
        )

    def replay(
        self,
        topic: str = "",
        *,
        offsets: Optional[Tuple[int, int]] = None,
        published: Optional[Tuple[When, Optional[When]]] = None,
        due: Optional[Tuple[When, Optional[When]]] = None,
        partition: Optional[int] = None,
        key: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        message_id_prefix: Optional[str] = None,
    ) -> Iterator[StoredEvent]:
        """Stored events, streamed: give exactly one range. `offsets=(start,
        end)` reads offsets [start, end) of each partition (end 0: up to
        now); `published=(from, to)` and `due=(from, to)` read events
        published or due in [from, to) (to None: no end). Without a topic,
        events of every topic. Filters: one `partition`, a
        routing `key`, `headers` an event must all carry, a message id
        prefix. Partition by partition, each in offset order. A topic's
        events are read in pages of 1000 (`SearchEvents`), every topic's
        over a `Replay` stream (leaving the loop early cancels it). A
        failure raises `ChronosError`.
        """
        req = _replay.request(topic, offsets, published, due)
        if partition is not None:
            req.partition_id = partition
        req.key = key or ""
        req.headers.update(headers or {})
        req.message_id_prefix = message_id_prefix or ""
        if topic:
            # Pages of a topic's events cost grpc-python a tenth of a stream's.
            # No deadline, as the stream has none: a sparse filter can make a page read far.
            return _replay.pages(lambda page: self._unary(self._events.SearchEvents, page, timeout_s=None), req)
        return _replay.stream(self._conn.current()[1].events.Replay(req))

    def fetch(
        self,
        group: str,
        topic: str,
        max_deliveries: int = 10,
        wait_s: float = 1.0,
        start: Union[str, When] = "latest",
    ) -> List[Delivery]:
        """Up to `max_deliveries` deliveries of `group`, returning as soon as
        that many came or after `wait_s` with what came by then (a pull, for
        cron jobs and functions; a `subscribe` member is better for a steady
        flow). What is returned stays in flight for the group's ack timeout:
        settle each with `ack`; what is not acked by then is delivered again.
        `start` as for `subscribe`. Not retried (a retry would take other
        events), but a failure moves the client to the next node.
        """
        if not 1 <= max_deliveries <= 100_000:
            raise ValueError(f"max_deliveries: {max_deliveries} must be between 1 and 100000")
        if not 0 < wait_s <= 3600:
            raise ValueError(f"wait_s: {wait_s} must be above 0 and at most 3600")
        req = events_pb2.SubscribeRequest(
            consumer_group=group,
            topic=topic,
            max_inflight=max_deliveries,
            max_deliveries=max_deliveries,
            max_wait_ms=max(1, int(wait_s * 1000)),
            keep_unacked=True,
            **start_fields(start),
        )
        generation, node = self._conn.current()
        call = node.events.Subscribe(req, timeout=wait_s + (self.timeout_s or 10.0))
        try:
            return [Delivery.from_pb(d) for d in call]
        except grpc.RpcError as rpc_err:
            err = ChronosError.from_rpc_error(rpc_err)
            rpc_err.__traceback__ = None
            if err.code in _connection.RETRYABLE:
                self._conn.fail_over(generation, err)
            raise err from None

    def ack(self, group: str, *deliveries: Union[Delivery, str], nack: bool = False, delay_s: float = 0) -> AckTotals:
        """Acks (or with `nack`, gives back after `delay_s`, 0: the
        server's backoff) deliveries of `group` by id, from `fetch` or any
        member; an earlier attempt's id counts too. Ids no longer in flight
        come back in `unknown`. Retried: settling twice is harmless."""
        items = ack_items(deliveries, nack, delay_s)
        answer = self._unary(self._events.Ack, events_pb2.AckRequest(consumer_group=group, items=items))
        return AckTotals(answer.acked, answer.nacked, list(answer.unknown))

    def producer(
        self,
        linger_s: float = 0.005,
        max_batch: int = 1000,
        max_inflight_batches: int = 4,
        max_queued: int = 10_000,
    ) -> Producer:
        """A `Producer`: `send` from any number of threads, events gathered
        into `PublishBatch` calls (`max_batch` events, or what came within
        `linger_s` of the first), each answered through its own `Future`."""
        return Producer(self, linger_s, max_batch, max_inflight_batches, max_queued)

    def subscribe(
        self,
        group: str,
        topic: str,
        max_inflight: int = 0,
        start: Union[str, When] = "latest",
        partition: Optional[int] = None,
        ack_batch: int = 64,
        ack_linger_s: float = 0.005,
        reconnect: RetryPolicy = RECONNECT,
    ) -> Subscription:
        """Joins consumer group `group` of `topic` over a `Consume` stream.

        Every group gets every event; the members of a group share them. At
        most `max_inflight` unsettled deliveries at once (0: the server's
        default). `start` applies only when this creates the group:
        "latest" (events that come due from now on), "earliest" (every
        retained event) or a time (events due at or after it). `partition`
        limits the member to one partition. Acks and nacks go out together:
        `ack_batch` of them (at most half of `max_inflight`), or what came
        within `ack_linger_s` of the first (`flush` and `close` send what
        waits at once). A stream that breaks
        with UNAVAILABLE is subscribed again within `reconnect` (two minutes
        by default; `RetryPolicy.none()` to never). Errors in the request
        surface as `ChronosError` on the first `poll` or iteration.
        """
        req = events_pb2.SubscribeRequest(
            consumer_group=group,
            topic=topic,
            max_inflight=max_inflight,
            partition_id=partition,
            **start_fields(start),
        )
        sub = Subscription(self._conn, req, ack_batch=ack_batch, ack_linger_s=ack_linger_s, reconnect=reconnect)
        self._subscriptions.add(sub)
        return sub

    # Call sites read `self._unary(self._events.Publish, req)`.
    _events = Service("events")
    _admin = Service("admin")

    def _unary(self, rpc: Rpc, req, idempotent: bool = True, timeout_s: Optional[float] = -1.0, deletes: bool = False):
        """One unary call through the retry loop (`timeout_s` -1: the client's;
        `deletes`: see `Connection.call`)."""
        timeout_s = self.timeout_s if timeout_s == -1.0 else timeout_s
        return self._conn.call(rpc, req, timeout_s, idempotent, deletes)
