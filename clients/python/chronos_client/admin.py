"""Topics, consumer groups and dead letters (`AdminService`): the calls of
`Client` an operator makes, mixed in."""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence

from . import _convert
from ._convert import When
from ._proto import admin_pb2


class TopicInfo(NamedTuple):
    name: str
    #: Events stored and not yet fired.
    pending: int


class GroupInfo(NamedTuple):
    """A consumer group of a topic, summed over the partitions."""

    name: str
    topic: str
    #: Members subscribed now.
    members: int
    #: Deliveries handed out and not yet settled, or waiting for a redelivery.
    inflight: int
    #: Fired events the group has not been handed yet.
    lag: int
    #: Due time of the oldest of those (ms since the epoch; 0: none).
    next_due_ts: int
    dead_letters: int


class DeadLetter(NamedTuple):
    """An event a group gave up on after its last attempt."""

    topic: str
    message_id: str
    payload: bytes
    key: str
    headers: Dict[str, str]
    schedule_ts: int
    partition: int
    offset: int
    attempts: int
    #: Why the last attempt failed.
    reason: str
    #: When it was dead-lettered, ms since the epoch.
    dead_ts: int


class GroupDeleted(NamedTuple):
    """What went with a deleted group."""

    in_flight: int
    dead_letters: int


def _group(g: admin_pb2.GroupInfo) -> GroupInfo:
    return GroupInfo(g.name, g.topic, g.members, g.inflight, g.lag, g.next_due_ts, g.dead_letters)


class Admin:
    """The `AdminService` calls of `Client` (mixed in). Each raises
    `ChronosError` (NOT_FOUND for an unknown group, PERMISSION_DENIED when the
    token's role may not)."""

    def list_topics(self) -> List[TopicInfo]:
        """Every topic with stored events, with how many are pending."""
        r = self._unary(self._admin.ListTopics, admin_pb2.ListTopicsRequest())
        return [TopicInfo(t.name, t.pending) for t in r.topics]

    def list_groups(self, topic: str = "") -> List[GroupInfo]:
        """The consumer groups of `topic` (empty: of every topic)."""
        r = self._unary(self._admin.ListGroups, admin_pb2.ListGroupsRequest(topic=topic))
        return [_group(g) for g in r.groups]

    def describe_group(self, group: str, topic: str) -> GroupInfo:
        req = admin_pb2.DescribeGroupRequest(consumer_group=group, topic=topic)
        return _group(self._unary(self._admin.DescribeGroup, req).group)

    def seek_group(self, group: str, topic: str, to: When) -> None:
        """Moves the group back (or forward) to the events due at or after
        `to`: those still retained are delivered to it again."""
        req = admin_pb2.SeekGroupRequest(consumer_group=group, topic=topic, ts=_convert.epoch_ms(to, "to"))
        self._unary(self._admin.SeekGroup, req)

    def delete_group(self, group: str, topic: str) -> GroupDeleted:
        """Removes the group with its in-flight events and dead letters; the
        topic's events are untouched and the name can be subscribed again as
        a new group. Refused (FAILED_PRECONDITION) while a member is subscribed.
        Not retried on UNAVAILABLE (it may have happened)."""
        req = admin_pb2.DeleteGroupRequest(consumer_group=group, topic=topic)
        r = self._unary(self._admin.DeleteGroup, req, idempotent=False)
        return GroupDeleted(r.in_flight, r.dead_letters)

    def dead_letters(self, group: str, topic: str, limit: int = 100) -> List[DeadLetter]:
        """The group's dead letters, at most `limit` (oldest first per partition)."""
        if limit <= 0:
            raise ValueError(f"limit: {limit} must be positive")
        req = admin_pb2.ListDeadLettersRequest(consumer_group=group, topic=topic, limit=limit)
        r = self._unary(self._admin.ListDeadLetters, req)
        return [
            DeadLetter(
                **_convert.event_fields(d.event),
                partition=d.partition,
                offset=d.offset,
                attempts=d.attempts,
                reason=d.reason,
                dead_ts=d.dead_ts,
            )
            for d in r.dead_letters
        ]

    def redrive(self, group: str, topic: str, message_ids: Optional[Sequence[str]] = None) -> int:
        """Delivers dead letters to the group again, as new attempts: those with
        `message_ids`, or all of them. Returns how many were redriven. Not
        retried on UNAVAILABLE (a retry could deliver them twice)."""
        req = admin_pb2.RedriveDeadLettersRequest(consumer_group=group, topic=topic, message_ids=list(message_ids or []))
        return self._unary(self._admin.RedriveDeadLetters, req, idempotent=False).redriven
