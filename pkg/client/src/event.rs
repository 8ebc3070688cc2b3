//! Events going in (the builder) and what publishing one answers.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chronos_proto::v1::PublishResponse;

/// An event: the `chronos.v1.Event` message. Build one with [`EventBuilder`].
pub use chronos_proto::v1::Event;

/// Builds an [`Event`]: topic and message id are required, the rest optional.
///
/// ```
/// use chronos_client::EventBuilder;
/// use std::time::Duration;
///
/// let event = EventBuilder::new("orders", "order-42")
///     .payload(&b"hello"[..])
///     .key("customer-7")
///     .header("trace-id", "abc")
///     .due_in(Duration::from_secs(5))
///     .build();
/// assert_eq!(event.topic, "orders");
/// assert_eq!(event.headers["trace-id"], "abc");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct EventBuilder {
    event: Event,
}

impl EventBuilder {
    /// An event for `topic` with deduplication id `message_id`, due now.
    pub fn new(topic: impl Into<String>, message_id: impl Into<String>) -> Self {
        EventBuilder {
            event: Event {
                topic: topic.into(),
                message_id: message_id.into(),
                ..Event::default()
            },
        }
    }

    /// The opaque body.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.event.payload = payload.into();
        self
    }

    /// The routing key: events with the same key go to the same partition.
    /// Without one, the message id routes. Cancel needs the same key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.event.key = key.into();
        self
    }

    /// Adds one header (free-form metadata delivered with the event).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.event.headers.insert(name.into(), value.into());
        self
    }

    /// Replaces all headers.
    pub fn headers(mut self, headers: HashMap<String, String>) -> Self {
        self.event.headers = headers;
        self
    }

    /// Due at `at` (rounded down to the millisecond; a past time means now).
    pub fn due_at(mut self, at: SystemTime) -> Self {
        self.event.schedule_ts = to_ms(at);
        self
    }

    /// Due `delay` from now (by this machine's clock).
    pub fn due_in(self, delay: Duration) -> Self {
        self.due_at(SystemTime::now() + delay)
    }

    /// Due at `schedule_ts_ms`, milliseconds since the Unix epoch.
    pub fn due_at_ms(mut self, schedule_ts_ms: i64) -> Self {
        self.event.schedule_ts = schedule_ts_ms;
        self
    }

    pub fn build(self) -> Event {
        self.event
    }
}

impl From<EventBuilder> for Event {
    fn from(b: EventBuilder) -> Event {
        b.build()
    }
}

/// Where a published event was stored and when it becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub partition: u32,
    pub offset: u64,
    /// When the event becomes due, ms since the Unix epoch:
    /// max(schedule_ts, the leader's clock when it appended the event).
    pub due_ts: i64,
    /// `(topic, message_id)` was already published within the dedup window;
    /// the other fields are the original's. Also what a retried publish that
    /// had in fact been stored answers.
    pub duplicate: bool,
}

impl Published {
    /// [`Published::due_ts`] as a `SystemTime`.
    pub fn due_time(&self) -> SystemTime {
        from_ms(self.due_ts)
    }
}

impl From<PublishResponse> for Published {
    fn from(r: PublishResponse) -> Self {
        Published {
            partition: r.partition,
            offset: r.offset,
            due_ts: r.due_ts,
            duplicate: r.duplicate,
        }
    }
}

/// Milliseconds since the Unix epoch (negative before it).
pub fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The inverse of [`to_ms`].
pub fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_round_trip() {
        for ms in [0, 1, 1_893_456_000_000, -5] {
            assert_eq!(to_ms(from_ms(ms)), ms);
        }
    }

    #[test]
    fn due_in_is_in_the_future() {
        let before = to_ms(SystemTime::now());
        let ev = EventBuilder::new("t", "m")
            .due_in(Duration::from_secs(2))
            .build();
        assert!(ev.schedule_ts >= before + 2000);
    }
}
