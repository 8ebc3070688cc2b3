//! `publish`, `subscribe`, `replay`, `cancel`.

use std::io::Read;
use std::path::PathBuf;

use chronos_proto::v1::{
    consume_request, consume_response, replay_request, AckItem, AckRequest, CancelBatchRequest,
    CancelRequest, CancelStatus, ConsumeRequest, DeliveryStatus, DescribeEventRequest, Event,
    EventStatus, OffsetRange, PublishRequest, ReplayRequest, StartPosition, SubscribeRequest,
    TimeRange,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::output::{delivery_json, delivery_line, event_json, payload_text, print_json};
use super::{events_client, fmt_time, now_ms, parse_duration, parse_time, Conn, Failure, Result};

#[derive(clap::Args, Debug)]
pub struct PublishArgs {
    /// Topic to publish to.
    pub topic: String,
    /// The payload. Without it, the payload is read from --file, or else stdin.
    pub payload: Option<String>,
    /// Read the payload from this file.
    #[arg(long, conflicts_with = "payload")]
    pub file: Option<PathBuf>,
    /// Message id (the dedup identity); a fresh one when omitted.
    #[arg(long)]
    pub id: Option<String>,
    /// Routing key: events with the same key go to the same partition.
    #[arg(long)]
    pub key: Option<String>,
    /// A header, repeatable: --header source=cli
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    /// When to deliver: RFC 3339 (2030-01-01T09:00:00Z) or ms since the epoch.
    #[arg(long, conflicts_with = "after")]
    pub at: Option<String>,
    /// Deliver after this long: 30s, 10m, 2h.
    #[arg(long = "in", value_name = "DURATION")]
    pub after: Option<String>,
    /// Move a still-pending event with the same id instead of deduplicating.
    #[arg(long)]
    pub reschedule: bool,
}

pub async fn publish(conn: &Conn, a: PublishArgs) -> Result<()> {
    let schedule_ts = match (&a.at, &a.after) {
        (Some(at), _) => parse_time("--at", at)?,
        (None, Some(after)) => now_ms() + parse_duration("--in", after)?.as_millis() as i64,
        (None, None) => 0,
    };
    let mut headers = std::collections::HashMap::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--header {h:?}: expected KEY=VALUE")))?;
        headers.insert(k.to_string(), v.to_string());
    }
    let payload = match (&a.payload, &a.file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(path)) => std::fs::read(path)
            .map_err(|e| Failure::Usage(format!("--file {}: {e}", path.display())))?,
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Usage(format!("reading the payload from stdin: {e}")))?;
            buf
        }
    };
    let message_id =
        a.id.clone()
            .unwrap_or_else(|| format!("cli-{}-{}", now_ms(), std::process::id()));
    let event = Event {
        message_id,
        schedule_ts,
        payload: payload.into(),
        topic: a.topic.clone(),
        key: a.key.clone().unwrap_or_default(),
        headers,
    };
    let mut client = events_client(conn).await?;
    let r = client
        .publish(PublishRequest {
            event: Some(event),
            reschedule: a.reschedule,
        })
        .await?
        .into_inner();
    if conn.json {
        print_json(&json!({
            "message_id": r.message_id, "partition": r.partition, "offset": r.offset,
            "due_ts": r.due_ts, "duplicate": r.duplicate,
        }));
    } else {
        let dup = if r.duplicate {
            " (duplicate: already published, nothing stored)"
        } else {
            ""
        };
        println!(
            "published {}/{}: partition {}, offset {}, due {}{dup}",
            a.topic,
            r.message_id,
            r.partition,
            r.offset,
            fmt_time(r.due_ts)
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct SubscribeArgs {
    /// Topic to consume.
    pub topic: String,
    /// Consumer group; created by its first subscribe.
    #[arg(long, short)]
    pub group: String,
    /// Where a new group starts: latest, earliest, or a time (RFC 3339 or ms).
    #[arg(long, default_value = "latest")]
    pub start: String,
    /// Unacked deliveries this member may hold.
    #[arg(long, default_value_t = 100)]
    pub max_inflight: u32,
    /// Only this partition (default: all).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Exit after this many deliveries.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this long (e.g. 30s).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Do not ack: deliveries come back after the ack timeout.
    #[arg(long)]
    pub no_ack: bool,
}

pub async fn subscribe(conn: &Conn, a: SubscribeArgs) -> Result<()> {
    let (start, start_ts) = match a.start.as_str() {
        "latest" => (StartPosition::Latest, 0),
        "earliest" => (StartPosition::Earliest, 0),
        t => (StartPosition::Timestamp, parse_time("--start", t)?),
    };
    let deadline = match &a.timeout {
        Some(t) => Some(Instant::now() + parse_duration("--timeout", t)?),
        None => None,
    };
    let subscribe = SubscribeRequest {
        consumer_group: a.group.clone(),
        topic: a.topic.clone(),
        partition_id: a.partition,
        max_inflight: a.max_inflight,
        start: start as i32,
        start_ts,
        // Each delivery is acked as it is printed.
        keep_unacked: false,
        max_deliveries: 0,
        max_wait_ms: 0,
    };
    let (tx, rx) = mpsc::channel(256);
    let send = |kind| ConsumeRequest { kind: Some(kind) };
    let _ = tx
        .send(send(consume_request::Kind::Subscribe(subscribe)))
        .await;
    let mut client = events_client(conn).await?;
    let mut stream = client.consume(ReceiverStream::new(rx)).await?.into_inner();
    let (mut received, mut unanswered) = (0u64, 0u64);
    let sleep_until = |d: Option<Instant>| async move {
        match d {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    while a.count.is_none_or(|n| received < n) {
        let msg = tokio::select! {
            m = stream.message() => m?,
            _ = sleep_until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(msg) = msg else { break };
        match msg.kind {
            Some(consume_response::Kind::Delivery(d)) => {
                received += 1;
                if conn.json {
                    print_json(&delivery_json(&d));
                } else {
                    println!("{}", delivery_line(&d));
                }
                if !a.no_ack {
                    let ack = AckRequest {
                        consumer_group: a.group.clone(),
                        items: vec![AckItem {
                            delivery_id: d.delivery_id,
                            ..Default::default()
                        }],
                        wait: false,
                    };
                    let _ = tx.send(send(consume_request::Kind::Ack(ack))).await;
                    unanswered += 1;
                }
            }
            Some(consume_response::Kind::Ack(_)) => unanswered = unanswered.saturating_sub(1),
            None => {}
        }
    }
    // Exit only once the server has recorded every ack, so none comes again.
    let until = Instant::now() + std::time::Duration::from_secs(5);
    while unanswered > 0 {
        match tokio::time::timeout_at(until, stream.message()).await {
            Ok(Ok(Some(m))) => {
                if let Some(consume_response::Kind::Ack(_)) = m.kind {
                    unanswered -= 1;
                }
            }
            Ok(Err(status)) => return Err(status.into()),
            Ok(Ok(None)) | Err(_) => {
                return Err(Failure::Server(format!(
                    "{unanswered} acks were not confirmed; those events will be delivered again"
                )))
            }
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Only this topic (needed for time ranges).
    pub topic: Option<String>,
    /// Only this partition (default: all).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Offsets from (inclusive).
    #[arg(long)]
    pub from_offset: Option<u64>,
    /// Offsets to (exclusive).
    #[arg(long)]
    pub to_offset: Option<u64>,
    /// Published at or after this time (RFC 3339 or ms).
    #[arg(long, conflicts_with_all = ["from_offset", "to_offset", "due_from", "due_to"])]
    pub since: Option<String>,
    /// Published before this time.
    #[arg(long, conflicts_with_all = ["from_offset", "to_offset", "due_from", "due_to"])]
    pub until: Option<String>,
    /// Due at or after this time.
    #[arg(long, conflicts_with_all = ["from_offset", "to_offset"])]
    pub due_from: Option<String>,
    /// Due before this time.
    #[arg(long, conflicts_with_all = ["from_offset", "to_offset"])]
    pub due_to: Option<String>,
    /// Only events published with this routing key.
    #[arg(long)]
    pub key: Option<String>,
}

pub async fn replay(conn: &Conn, a: ReplayArgs) -> Result<()> {
    let time = |flag: &str, v: &Option<String>| -> Result<i64> {
        v.as_deref().map_or(Ok(0), |s| parse_time(flag, s))
    };
    let range = if a.since.is_some() || a.until.is_some() {
        replay_request::Range::PublishTime(TimeRange {
            from_ts: time("--since", &a.since)?,
            to_ts: time("--until", &a.until)?,
        })
    } else if a.due_from.is_some() || a.due_to.is_some() {
        replay_request::Range::DueTime(TimeRange {
            from_ts: time("--due-from", &a.due_from)?,
            to_ts: time("--due-to", &a.due_to)?,
        })
    } else {
        replay_request::Range::Offsets(OffsetRange {
            from: a.from_offset.unwrap_or(0),
            to: a.to_offset.unwrap_or(0),
        })
    };
    let req = ReplayRequest {
        topic: a.topic.clone().unwrap_or_default(),
        partition_id: a.partition,
        range: Some(range),
        key: a.key.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut client = events_client(conn).await?;
    let mut stream = client.replay(req).await?.into_inner();
    while let Some(ev) = stream.message().await? {
        let e = ev.event.clone().unwrap_or_default();
        if conn.json {
            print_json(&json!({
                "partition": ev.partition, "offset": ev.offset, "publish_ts": ev.publish_ts,
                "due_ts": ev.due_ts, "event": event_json(&e),
            }));
        } else {
            println!(
                "p{}@{}  published {}  due {}  {}/{}  {}",
                ev.partition,
                ev.offset,
                fmt_time(ev.publish_ts),
                fmt_time(ev.due_ts),
                e.topic,
                e.message_id,
                payload_text(&e.payload)
            );
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    pub topic: String,
    /// One id, or many (sent as one `CancelBatch`).
    #[arg(required = true, num_args = 1..)]
    pub message_ids: Vec<String>,
    /// The routing key the events were published with, if any.
    #[arg(long)]
    pub key: Option<String>,
}

pub async fn cancel(conn: &Conn, a: CancelArgs) -> Result<()> {
    let mut client = events_client(conn).await?;
    let key = a.key.clone().unwrap_or_default();
    if let [message_id] = a.message_ids.as_slice() {
        let r = client
            .cancel(CancelRequest {
                topic: a.topic.clone(),
                message_id: message_id.clone(),
                key,
            })
            .await?
            .into_inner();
        if conn.json {
            print_json(
                &json!({"cancelled": message_id, "partition": r.partition, "offset": r.offset}),
            );
        } else {
            println!(
                "cancelled {}/{} (partition {}, offset {})",
                a.topic, message_id, r.partition, r.offset
            );
        }
        return Ok(());
    }
    let cancels = (a.message_ids.iter())
        .map(|id| CancelRequest {
            topic: a.topic.clone(),
            message_id: id.clone(),
            key: key.clone(),
        })
        .collect();
    let results = client
        .cancel_batch(CancelBatchRequest { cancels })
        .await?
        .into_inner()
        .results;
    let mut refused = 0;
    for r in &results {
        let status = cancel_status(r.status());
        if matches!(
            r.status(),
            CancelStatus::NotFound | CancelStatus::AlreadyFired
        ) {
            refused += 1;
        }
        if conn.json {
            print_json(&json!({"message_id": r.message_id, "status": status,
                "partition": r.partition, "offset": r.offset}));
        } else {
            println!(
                "{status} {}/{} (partition {}, offset {})",
                a.topic, r.message_id, r.partition, r.offset
            );
        }
    }
    if refused > 0 {
        return Err(Failure::Server(format!(
            "{refused} of {} events were not cancelled (not found or fired already)",
            results.len()
        )));
    }
    Ok(())
}

fn cancel_status(s: CancelStatus) -> &'static str {
    match s {
        CancelStatus::Cancelled => "cancelled",
        CancelStatus::AlreadyCancelled => "already-cancelled",
        CancelStatus::NotFound => "not-found",
        CancelStatus::AlreadyFired => "already-fired",
    }
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    pub topic: String,
    pub message_id: String,
    /// The routing key the event was published with, if any.
    #[arg(long)]
    pub key: Option<String>,
}

pub async fn describe(conn: &Conn, a: DescribeArgs) -> Result<()> {
    let mut client = events_client(conn).await?;
    let r = client
        .describe_event(DescribeEventRequest {
            topic: a.topic.clone(),
            message_id: a.message_id.clone(),
            key: a.key.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    let status = match r.status() {
        EventStatus::Pending => "pending",
        EventStatus::Fired => "fired",
        EventStatus::Cancelled => "cancelled",
        EventStatus::Unspecified => "unknown",
    };
    let delivery = |s: DeliveryStatus| match s {
        DeliveryStatus::Waiting => "waiting",
        DeliveryStatus::InFlight => "in_flight",
        DeliveryStatus::RetryWait => "retry_wait",
        DeliveryStatus::Dead => "dead",
        DeliveryStatus::Acked => "acked",
        DeliveryStatus::NotForGroup => "not_for_group",
        DeliveryStatus::Unspecified => "unknown",
    };
    if conn.json {
        let groups: Vec<_> = r
            .groups
            .iter()
            .map(|g| {
                json!({"group": g.group, "status": delivery(g.status()), "attempts": g.attempts,
                       "at_ts": g.at_ts, "reason": g.reason})
            })
            .collect();
        print_json(&json!({
            "topic": a.topic, "message_id": a.message_id, "status": status,
            "partition": r.partition, "offset": r.offset, "due_ts": r.due_ts,
            "fire_ts": r.fire_ts, "groups": groups, "groups_unknown": r.groups_unknown,
            "payload": r.event.as_ref().map(|e| payload_text(&e.payload)),
        }));
        return Ok(());
    }
    println!(
        "{}/{}: {status} (partition {}, offset {}, due {}, fired {})",
        a.topic,
        a.message_id,
        r.partition,
        r.offset,
        fmt_time(r.due_ts),
        fmt_time(r.fire_ts)
    );
    if r.groups_unknown {
        println!("  groups: not known (fired before this was recorded)");
    }
    for g in &r.groups {
        let mut line = format!("  group {}: {}", g.group, delivery(g.status()));
        if g.attempts > 0 {
            line.push_str(&format!(", attempts {}", g.attempts));
        }
        if g.at_ts > 0 {
            line.push_str(&format!(", at {}", fmt_time(g.at_ts)));
        }
        if !g.reason.is_empty() {
            line.push_str(&format!(", reason: {}", g.reason));
        }
        println!("{line}");
    }
    Ok(())
}
