"""Recurring schedules: each occurrence becomes one event of the schedule's
topic, with message_id `<schedule_id>@<nominal time>` and the headers
`chronos-schedule-id` and `chronos-nominal-time`."""

from __future__ import annotations

from typing import List, Mapping, NamedTuple, Optional, Sequence

from . import _convert
from ._convert import Payload, When
from ._proto import events_pb2

_MISSED = {
    "skip": events_pb2.MISSED_RUNS_SKIP,
    "fire_once": events_pb2.MISSED_RUNS_FIRE_ONCE,
    "catch_up": events_pb2.MISSED_RUNS_CATCH_UP,
}


class ScheduleInfo(NamedTuple):
    """A schedule as the server holds it."""

    schedule_id: str
    topic: str
    paused: bool
    #: The next occurrence not yet stored (ms since the epoch); 0 once it ended.
    next_ts: int
    #: The next occurrences, when asked for (`get_schedule`).
    upcoming_ts: List[int]
    occurrences: int
    last_ts: int
    partition: int


def _info(i: events_pb2.ScheduleInfo) -> ScheduleInfo:
    return ScheduleInfo(
        i.schedule.schedule_id,
        i.schedule.topic,
        i.paused,
        i.next_ts,
        list(i.upcoming_ts),
        i.occurrences,
        i.last_ts,
        i.partition,
    )


def schedule_pb(
    schedule_id: str,
    topic: str,
    payload: Payload = b"",
    cron: Optional[str] = None,
    every_s: Optional[float] = None,
    times: Optional[Sequence[When]] = None,
    time_zone: str = "",
    start: Optional[When] = None,
    end: Optional[When] = None,
    jitter_s: float = 0,
    missed: str = "skip",
    catch_up_limit: int = 0,
    key: Optional[str] = None,
    headers: Optional[Mapping[str, str]] = None,
) -> events_pb2.Schedule:
    rules = [r for r in (cron, every_s, times) if r is not None]
    if len(rules) != 1:
        raise ValueError("give exactly one of cron, every_s or times")
    if missed not in _MISSED:
        raise ValueError(f"missed: {missed!r} is not one of {sorted(_MISSED)}")
    s = events_pb2.Schedule(
        schedule_id=schedule_id,
        topic=topic,
        payload=_convert.payload_bytes(payload),
        key=key or "",
        headers=dict(headers or {}),
        time_zone=time_zone,
        start_ts=_convert.epoch_ms(start, "start") if start is not None else 0,
        end_ts=_convert.epoch_ms(end, "end") if end is not None else 0,
        jitter_ms=round(jitter_s * 1000),
        missed_runs=_MISSED[missed],
        catch_up_limit=catch_up_limit,
    )
    if cron is not None:
        s.cron = cron
    elif every_s is not None:
        s.every_ms = round(every_s * 1000)
    else:
        s.times.times_ts.extend(_convert.epoch_ms(t, "times") for t in times or [])
    return s


class Schedules:
    """The schedule calls of `Client` (mixed in)."""

    def create_schedule(self, schedule_id: str, topic: str, payload: Payload = b"", **rule) -> ScheduleInfo:
        """Creates a schedule: one of `cron` (six fields with seconds, or
        five, or @daily...), `every_s` (at least 1) or `times`; optional
        `time_zone` (IANA), `start`, `end`, `jitter_s`, `missed` ("skip",
        "fire_once", "catch_up"), `catch_up_limit`, `key`, `headers`.

        The same schedule again is answered as it is; other content under
        the same id raises `ChronosError` ALREADY_EXISTS.
        """
        req = events_pb2.CreateScheduleRequest(schedule=schedule_pb(schedule_id, topic, payload, **rule))
        return _info(self._unary(self._events.CreateSchedule, req).schedule)

    def update_schedule(self, schedule_id: str, topic: str, payload: Payload = b"", **rule) -> ScheduleInfo:
        """Replaces everything but the id (the arguments of `create_schedule`)."""
        req = events_pb2.UpdateScheduleRequest(schedule=schedule_pb(schedule_id, topic, payload, **rule))
        return _info(self._unary(self._events.UpdateSchedule, req).schedule)

    def pause_schedule(self, schedule_id: str) -> ScheduleInfo:
        req = events_pb2.PauseScheduleRequest(schedule_id=schedule_id)
        return _info(self._unary(self._events.PauseSchedule, req).schedule)

    def resume_schedule(self, schedule_id: str) -> ScheduleInfo:
        req = events_pb2.ResumeScheduleRequest(schedule_id=schedule_id)
        return _info(self._unary(self._events.ResumeSchedule, req).schedule)

    def delete_schedule(self, schedule_id: str) -> None:
        """Deletes a schedule; NOT_FOUND if there is none (but not after a
        retry: the unanswered attempt before it may have deleted it)."""
        req = events_pb2.DeleteScheduleRequest(schedule_id=schedule_id)
        self._unary(self._events.DeleteSchedule, req, deletes=True)

    def get_schedule(self, schedule_id: str, upcoming: int = 5) -> ScheduleInfo:
        req = events_pb2.GetScheduleRequest(schedule_id=schedule_id, upcoming=upcoming)
        return _info(self._unary(self._events.GetSchedule, req).schedule)

    def list_schedules(self, topic: str = "") -> List[ScheduleInfo]:
        """Every schedule (of `topic`, if given), paging to the end."""
        out: List[ScheduleInfo] = []
        token = ""
        while True:
            req = events_pb2.ListSchedulesRequest(topic=topic, page_token=token)
            page = self._unary(self._events.ListSchedules, req)
            out.extend(_info(i) for i in page.schedules)
            if not page.next_page_token:
                return out
            token = page.next_page_token

    def trigger_schedule(self, schedule_id: str) -> str:
        """Publishes one extra occurrence now; returns its message_id. Not
        retried on UNAVAILABLE (a retry would publish another)."""
        req = events_pb2.TriggerScheduleRequest(schedule_id=schedule_id)
        return self._unary(self._events.TriggerSchedule, req, idempotent=False).message_id
