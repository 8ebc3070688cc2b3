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
    pub max_headers_bytes: usize,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// Checks a topic name: 1-255 chars of [A-Za-z0-9._-], not starting with "__".
pub fn topic(field: &str, topic: &str) -> Result<(), Status> {
    if topic.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if topic.len() > MAX_TOPIC_CHARS {
        return Err(invalid(
            field,
            format!(
                "is {} characters, the limit is {MAX_TOPIC_CHARS}",
                topic.len()
            ),
        ));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            field,
            format!("contains {bad:?}; allowed are A-Z a-z 0-9 . _ -"),
        ));
    }
    if topic.starts_with("__") {
        return Err(invalid(
            field,
            format!("{topic:?} starts with \"__\", which is reserved"),
        ));
    }
    Ok(())
}

pub fn message_id(field: &str, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if id.len() > MAX_MESSAGE_ID_BYTES {
        return Err(invalid(
            field,
            format!("is {} bytes, the limit is {MAX_MESSAGE_ID_BYTES}", id.len()),
        ));
    }
    Ok(())
}

/// Checks one event; `field` is how the caller names it (`event`, `events[3]`).
pub fn event(field: &str, ev: &Event, limits: &Limits) -> Result<(), Status> {
    message_id(&format!("{field}.message_id"), &ev.message_id)?;
    topic(&format!("{field}.topic"), &ev.topic)?;
    if ev.key.len() > MAX_MESSAGE_ID_BYTES {
        return Err(invalid(
            &format!("{field}.key"),
            format!(
                "is {} bytes, the limit is {MAX_MESSAGE_ID_BYTES}",
                ev.key.len()
            ),
        ));
    }
    if ev.schedule_ts < 0 {
        return Err(invalid(
            &format!("{field}.schedule_ts"),
            format!(
                "is {}; it is milliseconds since the Unix epoch and cannot be negative",
                ev.schedule_ts
            ),
        ));
    }
    if ev.payload.len() > limits.max_payload_bytes {
        return Err(Status::invalid_argument(format!(
            "{field}.payload: is {} bytes, the limit is {} (limits.max_payload_bytes)",
            ev.payload.len(),
            limits.max_payload_bytes
        )));
    }
    let header_bytes: usize = ev.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if header_bytes > limits.max_headers_bytes {
        return Err(invalid(
            &format!("{field}.headers"),
            format!(
                "total {header_bytes} bytes, the limit is {} (limits.max_headers_bytes)",
                limits.max_headers_bytes
            ),
        ));
    }
    Ok(())
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
    for (i, ev) in events.iter().enumerate() {
        event(&format!("events[{i}]"), ev, limits)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_payload_bytes: 16,
        max_batch_events: 2,
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
    }
}
