//! How events and deliveries look on the terminal and in `--json` output.

use chronos_proto::v1::{Delivery, Event};
use serde_json::{json, Map, Value};

use super::fmt_time;

/// A payload for people, on one line: its text (escaped) when it is UTF-8, else hex.
pub fn payload_text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) => s.escape_debug().to_string(),
        Err(_) => format!("0x{}", hex(payload)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An event as JSON: the payload as `payload` when it is UTF-8, else `payload_hex`.
pub fn event_json(e: &Event) -> Value {
    let mut m = Map::new();
    m.insert("message_id".into(), json!(e.message_id));
    m.insert("topic".into(), json!(e.topic));
    if !e.key.is_empty() {
        m.insert("key".into(), json!(e.key));
    }
    m.insert("schedule_ts".into(), json!(e.schedule_ts));
    match std::str::from_utf8(&e.payload) {
        Ok(s) => m.insert("payload".into(), json!(s)),
        Err(_) => m.insert("payload_hex".into(), json!(hex(&e.payload))),
    };
    if !e.headers.is_empty() {
        m.insert("headers".into(), json!(e.headers));
    }
    Value::Object(m)
}

pub fn delivery_json(d: &Delivery) -> Value {
    json!({
        "delivery_id": d.delivery_id,
        "partition": d.partition,
        "offset": d.offset,
        "due_ts": d.due_ts,
        "attempt": d.attempt,
        "event": d.event.as_ref().map(event_json),
    })
}

/// One line per delivery: when it was due, where it is from, its payload.
pub fn delivery_line(d: &Delivery) -> String {
    let e = d.event.clone().unwrap_or_default();
    let attempt = if d.attempt > 1 {
        format!(" (attempt {})", d.attempt)
    } else {
        String::new()
    };
    format!(
        "{}  {}/{}  p{}@{}{attempt}  {}",
        fmt_time(d.due_ts),
        e.topic,
        e.message_id,
        d.partition,
        d.offset,
        payload_text(&e.payload)
    )
}

pub fn print_json(v: &Value) {
    println!("{v}");
}
