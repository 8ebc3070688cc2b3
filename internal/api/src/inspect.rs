//! Looking at what is stored and what is pending: `SearchEvents` (Replay's
//! filters, a page at a time), `ListPending` (a topic's pending events in due
//! order) and `CountPending` (how many come due per bucket of time).
//!
//! Pages of pending events are ordered by `(due_ts, partition, offset)`
//! across partitions; each partition's leader reads its part from a token
//! that names where the page starts, so that a page is the same whether a
//! partition is read here or on another node.

use std::sync::Arc;
use std::time::Instant;

use chronos_access::{Action, Permission};
use chronos_partition::{event_of, Partition, PartitionError, PendingKey, ReplayQuery};
use chronos_proto::v1::{
    replay_request, search_events_request, CountPendingRequest, CountPendingResponse,
    ListPendingRequest, ListPendingResponse, PendingBucket, PendingEvent, ReplayEvent,
    ReplayRequest, SearchEventsRequest, SearchEventsResponse, TimeRange,
};
use futures::StreamExt;
use tonic::Status;

use crate::events::{open_replay, replay_range};
use crate::forward::Forward;
use crate::gateway::Incoming;
use crate::status::invalid;
use crate::{status, validate, Node};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;
/// Pending events (of any topic) one partition reads for one page at most.
const PENDING_SCAN_BUDGET: usize = 20_000;
const DEFAULT_BUCKET_MS: i64 = 60_000;
const MAX_BUCKETS: i64 = 10_000;
const MAX_PREFIX_BYTES: usize = 128;

fn bad_token() -> Status {
    invalid("page_token", "is not a token this list gave")
}

/// Replay's filters, checked (shared by Replay and SearchEvents).
pub(crate) fn replay_query(req: &ReplayRequest) -> Result<ReplayQuery, Status> {
    let topic = if req.topic.is_empty() {
        None
    } else {
        validate::topic("topic", &req.topic)?;
        Some(req.topic.clone())
    };
    if req.message_id_prefix.len() > MAX_PREFIX_BYTES {
        return Err(invalid(
            "message_id_prefix",
            format!(
                "is {} bytes; at most {MAX_PREFIX_BYTES}",
                req.message_id_prefix.len()
            ),
        ));
    }
    if let Some(name) = req.headers.keys().find(|k| k.is_empty()) {
        return Err(invalid(
            format!("headers[{name:?}]").as_str(),
            "a header name is empty",
        ));
    }
    let mut headers: Vec<(String, String)> = req.headers.clone().into_iter().collect();
    headers.sort();
    Ok(ReplayQuery {
        range: replay_range(req.range)?,
        topic,
        key: (!req.key.is_empty()).then(|| req.key.clone()),
        headers,
        message_id_prefix: (!req.message_id_prefix.is_empty())
            .then(|| req.message_id_prefix.clone()),
        after_offset: req.after_offset,
    })
}

/// The partitions a request names: one, or all (absent or -1).
fn partitions_of(node: &Node, partition_id: Option<i32>) -> Result<Vec<u32>, Status> {
    match partition_id {
        None | Some(-1) => Ok(node.all_partitions()),
        Some(id) => Ok(vec![node.partition_id(|| "partition_id".into(), id.into())?]),
    }
}

/// A page of stored events: partitions in order, each in offset order; the
/// token is `partition.last_offset`.
pub(crate) async fn search(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: SearchEventsRequest,
) -> Result<SearchEventsResponse, Status> {
    validate::topic("topic", &req.topic)?;
    let size = validate::page_size(req.page_size, DEFAULT_PAGE, MAX_PAGE)?;
    let after = match req.page_token.split_once('.') {
        None if req.page_token.is_empty() => None,
        Some((p, o)) => match (p.parse::<u32>(), o.parse::<u64>()) {
            (Ok(p), Ok(o)) => Some((p, o)),
            _ => return Err(bad_token()),
        },
        None => return Err(bad_token()),
    };
    let range = req.range.map(|r| match r {
        search_events_request::Range::Offsets(r) => replay_request::Range::Offsets(r),
        search_events_request::Range::PublishTime(r) => replay_request::Range::PublishTime(r),
        search_events_request::Range::DueTime(r) => replay_request::Range::DueTime(r),
    });
    let template = ReplayRequest {
        topic: req.topic.clone(),
        partition_id: None,
        range: Some(range.unwrap_or(replay_request::Range::Offsets(Default::default()))),
        key: req.key,
        headers: req.headers,
        message_id_prefix: req.message_id_prefix,
        after_offset: None,
    };
    node.guard.authorize(
        &incoming.caller,
        &Action::on_topic(Permission::Replay, &req.topic),
    )?;
    replay_query(&template)?;
    let mut events: Vec<ReplayEvent> = Vec::with_capacity(size);
    for p in partitions_of(node, req.partition_id)? {
        let after_offset = match after {
            Some((ap, _)) if p < ap => continue,
            Some((ap, o)) if p == ap => Some(o),
            _ => None,
        };
        let forwarded = ReplayRequest {
            partition_id: Some(p as i32),
            after_offset,
            ..template.clone()
        };
        let query = replay_query(&forwarded)?;
        let mut stream = open_replay(node, p, incoming, query, forwarded).await?;
        while let Some(event) = stream.next().await {
            events.push(event?);
            if events.len() == size {
                let last = &events[size - 1];
                let next_page_token = format!("{}.{}", last.partition, last.offset);
                return Ok(SearchEventsResponse {
                    events,
                    next_page_token,
                });
            }
        }
    }
    Ok(SearchEventsResponse {
        events,
        next_page_token: String::new(),
    })
}

/// Runs the request `forwarded(p)` on the leader of each of `partitions` at
/// once: `here` where this node leads, forwarded as it is elsewhere.
async fn on_each_leader<R, H, HF>(
    node: &Arc<Node>,
    incoming: &Incoming,
    partitions: Vec<u32>,
    forwarded: impl Fn(u32) -> R,
    here: H,
) -> Result<Vec<R::Reply>, Status>
where
    R: Forward,
    H: Fn(Arc<Partition>, R) -> HF + Clone,
    HF: std::future::Future<Output = Result<R::Reply, Status>>,
{
    let deadline = Instant::now() + node.publish_timeout;
    futures::future::try_join_all(partitions.into_iter().map(|p| {
        let (req, here) = (forwarded(p), here.clone());
        async move {
            node.on_leader_of(p, incoming, deadline, &req, here, |r| r)
                .await
        }
    }))
    .await
}

/// A store read off the runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    read: impl FnOnce() -> Result<T, PartitionError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| Status::internal(format!("{what}: {e}")))?
        .map_err(status::from_partition)
}

/// Where a page starts: `(due_ts, partition, offset)`, inclusive.
type Position = (i64, u32, u64);

fn position_token((due, p, o): Position) -> String {
    format!("{due}.{p}.{o}")
}

fn parse_position(token: &str) -> Result<Option<Position>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let mut parts = token.split('.');
    let (Some(d), Some(p), Some(o), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_token());
    };
    match (d.parse(), p.parse(), o.parse()) {
        (Ok(d), Ok(p), Ok(o)) => Ok(Some((d, p, o))),
        _ => Err(bad_token()),
    }
}

/// Partition `p`'s first key at or after position `at`.
fn start_in(p: u32, (due, ap, o): Position) -> PendingKey {
    match p.cmp(&ap) {
        std::cmp::Ordering::Less => (due.saturating_add(1), 0),
        std::cmp::Ordering::Equal => (due, o),
        std::cmp::Ordering::Greater => (due, 0),
    }
}

/// A due-time range checked: `[from, to)`, `to` = i64::MAX for no end.
fn due_range(field: &str, r: Option<&TimeRange>) -> Result<(i64, i64), Status> {
    match r {
        None => Ok((0, i64::MAX)),
        Some(r) => {
            let (from, to) = validate::time_range(field, r)?;
            Ok((from, to.unwrap_or(i64::MAX)))
        }
    }
}

/// A page of a topic's pending events in `(due_ts, partition, offset)` order.
pub(crate) async fn list_pending(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: ListPendingRequest,
) -> Result<ListPendingResponse, Status> {
    validate::topic("topic", &req.topic)?;
    let size = validate::page_size(req.page_size, DEFAULT_PAGE, MAX_PAGE)?;
    let (from, to) = due_range("due_time", req.due_time.as_ref())?;
    let start = parse_position(&req.page_token)?
        .unwrap_or((0, 0, 0))
        .max((from, 0, 0));
    node.guard.authorize(
        &incoming.caller,
        &Action::on_topic(Permission::Replay, &req.topic),
    )?;
    let topic = req.topic.clone();
    let here = move |part: Arc<Partition>, _req: ListPendingRequest| {
        let topic = topic.clone();
        async move {
            let id = part.id();
            let page = blocking("reading pending events", move || {
                part.pending_page(&topic, start_in(id, start), to, size, PENDING_SCAN_BUDGET)
            })
            .await?;
            Ok(ListPendingResponse {
                events: page
                    .events
                    .into_iter()
                    .map(|((due_ts, offset), record)| PendingEvent {
                        event: Some(event_of(record)),
                        partition: id,
                        offset,
                        due_ts,
                    })
                    .collect(),
                next_page_token: page
                    .next
                    .map(|(d, o)| position_token((d, id, o)))
                    .unwrap_or_default(),
            })
        }
    };
    let forwarded = |p: u32| ListPendingRequest {
        partition_id: Some(p as i32),
        page_token: position_token(start),
        page_size: size as u32,
        ..req.clone()
    };
    let partitions = partitions_of(node, req.partition_id)?;
    let answers = on_each_leader(node, incoming, partitions, forwarded, here).await?;
    merge_pending(answers, size)
}

/// Merges partitions' pages: only what lies before every partition's
/// unread part is certain to be in order.
fn merge_pending(
    answers: Vec<ListPendingResponse>,
    size: usize,
) -> Result<ListPendingResponse, Status> {
    let mut frontier: Option<Position> = None;
    let mut events = Vec::new();
    for answer in answers {
        if let Some(next) = parse_position(&answer.next_page_token)? {
            frontier = Some(frontier.map_or(next, |f| f.min(next)));
        }
        events.extend(answer.events);
    }
    let key = |e: &PendingEvent| (e.due_ts, e.partition, e.offset);
    events.retain(|e| frontier.is_none_or(|f| key(e) < f));
    events.sort_by_key(key);
    let next = if events.len() > size {
        events.truncate(size);
        let (d, p, o) = key(&events[size - 1]);
        Some(match o.checked_add(1) {
            Some(o) => (d, p, o),
            None => (d, p + 1, 0),
        })
    } else {
        frontier
    };
    Ok(ListPendingResponse {
        events,
        next_page_token: next.map(position_token).unwrap_or_default(),
    })
}

/// Counts of a topic's pending events per bucket of due time.
pub(crate) async fn count_pending(
    node: &Arc<Node>,
    incoming: &Incoming,
    req: CountPendingRequest,
) -> Result<CountPendingResponse, Status> {
    validate::topic("topic", &req.topic)?;
    let bucket_ms = match req.bucket_ms {
        0 => DEFAULT_BUCKET_MS,
        b if b <= 0 || b % 1000 != 0 => {
            return Err(invalid(
                "bucket_ms",
                format!("{b} is not a positive whole number of seconds in ms"),
            ))
        }
        b => b,
    };
    let (from, to) = match &req.due_time {
        None => {
            let now = chronos_partition::schedule::now_ms().div_euclid(1000) * 1000;
            (now, now + 3_600_000)
        }
        Some(r) => {
            let (from, to) = due_range("due_time", Some(r))?;
            if r.to_ts == 0 {
                return Err(invalid(
                    "due_time.to_ts",
                    "is required (0 would have no end)",
                ));
            }
            // Whole seconds: the counts are kept per second.
            let to = match to % 1000 {
                0 => Some(to),
                rest => to.checked_add(1000 - rest),
            }
            .ok_or_else(|| {
                invalid(
                    "due_time.to_ts",
                    format!("{to} is beyond the last whole second"),
                )
            })?;
            (from.div_euclid(1000) * 1000, to)
        }
    };
    // In i128: a far `to_ts` and a large bucket must not overflow.
    let buckets = ((to as i128 - from as i128) + bucket_ms as i128 - 1) / bucket_ms as i128;
    if buckets > MAX_BUCKETS as i128 {
        return Err(invalid(
            "bucket_ms",
            format!("{bucket_ms} ms cuts the range into {buckets} buckets; at most {MAX_BUCKETS}"),
        ));
    }
    let buckets = buckets as i64;
    node.guard.authorize(
        &incoming.caller,
        &Action::on_topic(Permission::Describe, &req.topic),
    )?;
    let topic = req.topic.clone();
    let here = move |part: Arc<Partition>, _req: CountPendingRequest| {
        let topic = topic.clone();
        async move {
            let (before, within) = blocking("counting pending events", move || {
                Ok((
                    part.due_counts(&topic, 0, from)?,
                    part.due_counts(&topic, from, to)?,
                ))
            })
            .await?;
            let mut counts = vec![0u64; buckets as usize];
            for (ts, n) in within {
                counts[((ts - from) / bucket_ms) as usize] += n;
            }
            Ok(answer(
                from,
                bucket_ms,
                counts,
                before.iter().map(|(_, n)| n).sum(),
            ))
        }
    };
    let forwarded = |p: u32| CountPendingRequest {
        topic: req.topic.clone(),
        due_time: Some(TimeRange {
            from_ts: from,
            to_ts: to,
        }),
        bucket_ms,
        partition_id: Some(p as i32),
    };
    let partitions = partitions_of(node, req.partition_id)?;
    let answers = on_each_leader(node, incoming, partitions, forwarded, here).await?;
    let mut counts = vec![0u64; buckets as usize];
    let mut before = 0;
    for a in answers {
        if a.buckets.len() != counts.len() {
            return Err(Status::internal(format!(
                "a partition answered {} buckets, not {}",
                a.buckets.len(),
                counts.len()
            )));
        }
        for (sum, b) in counts.iter_mut().zip(&a.buckets) {
            *sum += b.count;
        }
        before += a.before;
    }
    Ok(answer(from, bucket_ms, counts, before))
}

fn answer(from: i64, bucket_ms: i64, counts: Vec<u64>, before: u64) -> CountPendingResponse {
    CountPendingResponse {
        total: counts.iter().sum(),
        buckets: counts
            .into_iter()
            .enumerate()
            .map(|(i, count)| PendingBucket {
                from_ts: from + i as i64 * bucket_ms,
                count,
            })
            .collect(),
        bucket_ms,
        before,
    }
}
