"""Python values to request fields and back: times to epoch milliseconds,
kwargs to `Event`, a `PublishResponse` to a `PublishResult`."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Mapping, NamedTuple, Optional, Union

from ._proto import events_pb2

#: A point in time: an aware `datetime`, or milliseconds since the Unix epoch.
When = Union[datetime, int]
#: An event body: bytes as they are, a str as UTF-8.
Payload = Union[bytes, bytearray, memoryview, str]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class PublishResult(NamedTuple):
    """Where an event was stored and when it becomes due."""

    partition: int
    offset: int
    #: max(schedule_ts, the server's clock at publish), ms since the epoch.
    due_ts: int
    #: True when (topic, message_id) was already published: nothing new was
    #: stored and the other fields are the original's.
    duplicate: bool


def publish_result(r: events_pb2.PublishResponse) -> PublishResult:
    return PublishResult(r.partition, r.offset, r.due_ts, r.duplicate)


def now_ms() -> int:
    """This machine's wall clock in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def epoch_ms(value: When, what: str) -> int:
    """`value` in ms since the epoch; `what` names the argument in errors."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what}: a naive datetime is ambiguous; give it a tzinfo (e.g. timezone.utc)")
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"{what}: expected an aware datetime or epoch milliseconds (int), got {type(value).__name__}")


def schedule_ts(at: Optional[When], after: Optional[float]) -> int:
    """The `schedule_ts` for `at` (a time) or `after` (seconds from now); 0 (= now) for neither."""
    if at is not None and after is not None:
        raise ValueError("give `at` or `after`, not both")
    if at is not None:
        return epoch_ms(at, "at")
    if after is not None:
        if after < 0:
            raise ValueError(f"after: {after} s is negative")
        # Rounded up: the event must not become due before `after` has passed.
        return now_ms() + math.ceil(after * 1000)
    return 0


def payload_bytes(payload: Payload) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return bytes(payload)


def event(
    topic: str,
    message_id: str,
    payload: Payload = b"",
    at: Optional[When] = None,
    after: Optional[float] = None,
    key: Optional[str] = None,
    headers: Optional[Mapping[str, str]] = None,
) -> events_pb2.Event:
    """An `Event` message from `Client.publish`'s arguments."""
    return events_pb2.Event(
        topic=topic,
        message_id=message_id,
        payload=payload_bytes(payload),
        schedule_ts=schedule_ts(at, after),
        key=key or "",
        headers=dict(headers or {}),
    )


def event_fields(e: events_pb2.Event) -> dict:
    """An `Event` message's fields as Python values: the shared part of
    `Delivery`, `StoredEvent` and `DeadLetter`."""
    return {
        "topic": e.topic,
        "message_id": e.message_id,
        "payload": bytes(e.payload),
        "key": e.key,
        "headers": dict(e.headers),
        "schedule_ts": e.schedule_ts,
    }
