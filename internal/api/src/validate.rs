//! Input validation: every rule of an event, with the offending field named.
//!
//! Runs before anything reaches a partition, so bad input costs nothing and
//! stores nothing. Messages name the field the way the caller wrote it
//! (`event.topic`, `events[3].message_id`).

use chronos_config::{MAX_MESSAGE_ID_BYTES, MAX_TOPIC_CHARS};
use chronos_proto::v1::Event;
use tonic::Status;

/// Limits taken from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
    pub max_headers_bytes: usize,
}

use crate::status::invalid;

/// A page size: 0 means `default`, more than `max` is refused.
pub(crate) fn page_size(size: u32, default: u32, max: u32) -> Result<usize, Status> {
    match size {
        0 => Ok(default as usize),
        n if n > max => Err(invalid("page_size", format!("is {n}; at most {max}"))),
        n => Ok(n as usize),
    }
}

/// A time range `field`, checked: `[from_ts, to_ts)`, `to_ts` None for no end.
pub(crate) fn time_range(
    field: &str,
    r: &chronos_proto::v1::TimeRange,
) -> Result<(i64, Option<i64>), Status> {
    if r.from_ts < 0 {
        return Err(invalid(
            &format!("{field}.from_ts"),
            format!("{} is negative", r.from_ts),
        ));
    }
    if r.to_ts != 0 && r.to_ts < r.from_ts {
        return Err(invalid(
            &format!("{field}.to_ts"),
            format!("{} is before {field}.from_ts {}", r.to_ts, r.from_ts),
        ));
    }
    Ok((r.from_ts, (r.to_ts != 0).then_some(r.to_ts)))
}

/// A broken rule: which field (relative to its message) and why. Field names
/// are only formatted when a rule fails, never on the hot path.
type Broken = (&'static str, String);

fn topic_rule(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("is required".into());
    }
    if topic.len() > MAX_TOPIC_CHARS {
        return Err(format!(
            "is {} characters, the limit is {MAX_TOPIC_CHARS}",
            topic.len()
        ));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !topic.bytes().all(allowed) {
        let bad = topic
            .chars()
            .find(|c| !(c.is_ascii() && allowed(*c as u8)))
            .unwrap_or('?');
        return Err(format!("contains {bad:?}; allowed are A-Z a-z 0-9 . _ -"));
    }
    if topic.starts_with("__") {
        return Err(format!("{topic:?} starts with \"__\", which is reserved"));
    }
    Ok(())
}

fn message_id_rule(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is required".into());
    }
    if id.len() > MAX_MESSAGE_ID_BYTES {
        return Err(format!(
            "is {} bytes, the limit is {MAX_MESSAGE_ID_BYTES}",
            id.len()
        ));
    }
    Ok(())
}

/// Checks a message id: 1-128 bytes.
pub fn message_id(field: &str, id: &str) -> Result<(), Status> {
    message_id_rule(id).map_err(|why| invalid(field, why))
}

/// Checks a topic name: 1-255 chars of [A-Za-z0-9._-], not starting with "__".
pub fn topic(field: &str, topic: &str) -> Result<(), Status> {
    topic_rule(topic).map_err(|why| invalid(field, why))
}

/// Checks a consumer group name: the same rules as a topic name.
pub fn group(field: &str, group: &str) -> Result<(), Status> {
    topic_rule(group).map_err(|why| invalid(field, why))
}

fn event_rules(ev: &Event, limits: &Limits) -> Result<(), Broken> {
    message_id_rule(&ev.message_id).map_err(|why| ("message_id", why))?;
    topic_rule(&ev.topic).map_err(|why| ("topic", why))?;
    if ev.key.len() > MAX_MESSAGE_ID_BYTES {
        return Err((
            "key",
            format!(
                "is {} bytes, the limit is {MAX_MESSAGE_ID_BYTES}",
                ev.key.len()
            ),
        ));
    }
    if ev.schedule_ts < 0 {
        let why = format!(
            "is {}; it is milliseconds since the Unix epoch and cannot be negative",
            ev.schedule_ts
        );
        return Err(("schedule_ts", why));
    }
    if ev.payload.len() > limits.max_payload_bytes {
        let why = format!(
            "is {} bytes, the limit is {} (limits.max_payload_bytes)",
            ev.payload.len(),
            limits.max_payload_bytes
        );
        return Err(("payload", why));
    }
    let header_bytes: usize = ev.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if header_bytes > limits.max_headers_bytes {
        let why = format!(
            "total {header_bytes} bytes, the limit is {} (limits.max_headers_bytes)",
            limits.max_headers_bytes
        );
        return Err(("headers", why));
    }
    Ok(())
}

/// Bytes an event contributes to its log record (fields that carry data).
fn event_bytes(ev: &Event) -> usize {
    let headers: usize = ev.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    ev.message_id.len() + ev.topic.len() + ev.key.len() + ev.payload.len() + headers
}

/// Checks one event; `field` is how the caller names it (`event`).
pub fn event(field: &str, ev: &Event, limits: &Limits) -> Result<(), Status> {
    event_rules(ev, limits).map_err(|(sub, why)| invalid(&format!("{field}.{sub}"), why))
}

pub fn batch(events: &[Event], limits: &Limits) -> Result<(), Status> {
    if events.is_empty() {
        return Err(invalid("events", "is empty; send at least one event"));
    }
    if events.len() > limits.max_batch_events {
        return Err(invalid(
            "events",
            format!(
                "has {} events, the limit is {} (limits.max_batch_events)",
                events.len(),
                limits.max_batch_events
            ),
        ));
    }
    let mut total_bytes = 0usize;
    for (i, ev) in events.iter().enumerate() {
        event_rules(ev, limits)
            .map_err(|(sub, why)| invalid(&format!("events[{i}].{sub}"), why))?;
        total_bytes += event_bytes(ev);
    }
    if total_bytes > limits.max_batch_bytes {
        return Err(invalid(
            "events",
            format!(
                "total {total_bytes} bytes, the limit is {} (limits.max_batch_bytes); split the batch",
                limits.max_batch_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_payload_bytes: 16,
        max_batch_events: 2,
        max_batch_bytes: 60,
        max_headers_bytes: 8,
    };

    fn ok_event() -> Event {
        Event {
            message_id: "m".into(),
            topic: "orders.eu-1_x".into(),
            ..Default::default()
        }
    }

    fn rejects(ev: Event, field: &str) {
        let err = event("event", &ev, &LIMITS).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }

    #[test]
    fn each_rule_names_its_field() {
        event("event", &ok_event(), &LIMITS).unwrap();
        rejects(
            Event {
                message_id: String::new(),
                ..ok_event()
            },
            "event.message_id",
        );
        rejects(
            Event {
                message_id: "x".repeat(129),
                ..ok_event()
            },
            "event.message_id",
        );
        rejects(
            Event {
                topic: String::new(),
                ..ok_event()
            },
            "event.topic",
        );
        rejects(
            Event {
                topic: "a/b".into(),
                ..ok_event()
            },
            "event.topic",
        );
        rejects(
            Event {
                topic: "__system".into(),
                ..ok_event()
            },
            "event.topic",
        );
        rejects(
            Event {
                topic: "t".repeat(256),
                ..ok_event()
            },
            "event.topic",
        );
        rejects(
            Event {
                schedule_ts: -1,
                ..ok_event()
            },
            "event.schedule_ts",
        );
        rejects(
            Event {
                payload: vec![0u8; 17].into(),
                ..ok_event()
            },
            "event.payload",
        );
        rejects(
            Event {
                key: "k".repeat(129),
                ..ok_event()
            },
            "event.key",
        );
        let headers = [("abcd".to_string(), "efghi".to_string())].into();
        rejects(
            Event {
                headers,
                ..ok_event()
            },
            "event.headers",
        );
    }

    #[test]
    fn limits_are_inclusive() {
        event(
            "event",
            &Event {
                message_id: "x".repeat(128),
                ..ok_event()
            },
            &LIMITS,
        )
        .unwrap();
        event(
            "event",
            &Event {
                topic: "t".repeat(255),
                ..ok_event()
            },
            &LIMITS,
        )
        .unwrap();
        event(
            "event",
            &Event {
                payload: vec![0u8; 16].into(),
                ..ok_event()
            },
            &LIMITS,
        )
        .unwrap();
    }

    #[test]
    fn batches_name_the_index() {
        assert!(batch(&[], &LIMITS)
            .unwrap_err()
            .message()
            .starts_with("events"));
        let too_many = vec![ok_event(), ok_event(), ok_event()];
        assert!(batch(&too_many, &LIMITS)
            .unwrap_err()
            .message()
            .contains("limit is 2"));
        let bad = vec![
            ok_event(),
            Event {
                topic: "__x".into(),
                ..ok_event()
            },
        ];
        assert!(batch(&bad, &LIMITS)
            .unwrap_err()
            .message()
            .starts_with("events[1].topic"));
        // Two events of 1 + 13 + 16 bytes fit in 60; with a key of 1 more they do not.
        let full = || Event {
            payload: vec![0u8; 16].into(),
            ..ok_event()
        };
        batch(&[full(), full()], &LIMITS).unwrap();
        let over = [
            full(),
            Event {
                key: "k".repeat(2),
                ..full()
            },
        ];
        let err = batch(&over, &LIMITS).unwrap_err();
        assert!(
            err.message().contains("max_batch_bytes"),
            "{}",
            err.message()
        );
    }
}
