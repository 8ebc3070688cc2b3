//! Delivery: while this node leads the partition, its owner hands each
//! topic's fired events to the members of every consumer group of the topic
//! (fan-out across groups, round-robin among a group's members), within each
//! member's credits; it takes acks and nacks, redelivers on timeout or nack
//! with exponential backoff, and moves events that run out of attempts to the
//! group's dead-letter queue.
//!
//! Every change to a group (cursor, deliveries with attempt and deadline, acks,
//! retries, dead letters) is proposed through the log in batches
//! (`DeliveryCommand`), at most [`MAX_PROPOSALS`] at once. A delivery is sent
//! to its member before its record is durable: a crash then only causes a
//! redelivery (at-least-once), never a loss. An ack is answered only once the
//! entry recording it is applied, so an acknowledged event never comes back.
//!
//! At the start of a term the owner loads every group and the in-flight set
//! from the state machine; deliveries of an earlier term are redelivered at
//! once (their members are gone).

mod dispatch;
mod gauges;
mod group;
mod member;
mod pump;

use std::time::Duration;

use chronos_proto::internal::{EventRecord, StartKind};
use chronos_proto::v1::Event;
use tokio::sync::oneshot;

pub(crate) use dispatch::{Attaching, Changing, Dispatcher, Waiter};
pub use gauges::{GroupGauge, GroupGauges};
pub use member::{Member, Outgoing, Terms};

use crate::PartitionError;

/// Delivery proposals out at once (as for `Fire`: one appending, one applying).
const MAX_PROPOSALS: usize = 2;

/// Redelivery policy of consumer groups.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryOptions {
    /// A delivery not acked within this is redelivered.
    pub ack_timeout: Duration,
    /// Backoff before the second attempt; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Attempts before an event moves to the dead-letter queue.
    pub max_attempts: u32,
    /// Fired events stay in their topic's fire log (for groups that start
    /// EARLIEST or seek back) at least this long, and until every group of
    /// the topic is done with them.
    pub fired_retention: Duration,
    /// How often the fire logs are trimmed.
    pub trim_every: Duration,
    /// Longest that changes to groups (acks, deliveries) wait to share one
    /// log entry: nothing waits for it but the acks' answers (credit comes
    /// back at once), and an ack whose caller waits cuts it short. At a few
    /// hundred events per second per partition each change would otherwise
    /// be an entry of its own, and an entry costs far more than its contents.
    pub record_linger: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            ack_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_attempts: 5,
            fired_retention: Duration::from_secs(7 * 24 * 3600),
            trim_every: Duration::from_secs(30),
            record_linger: Duration::from_millis(50),
        }
    }
}

impl DeliveryOptions {
    /// Wait before redelivering after attempt `attempt` failed: base·2^(attempt-1)
    /// capped at `backoff_max`, with equal jitter (between half and all of it),
    /// so successive attempts wait strictly longer ranges.
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let base = self.backoff_base.as_millis().min(i64::MAX as u128) as i64;
        let cap = self.backoff_max.as_millis().min(i64::MAX as u128) as i64;
        let doublings = attempt.saturating_sub(1).min(40);
        let full = base.saturating_mul(1i64 << doublings).min(cap).max(0);
        let half = full / 2;
        half + jitter(full - half)
    }

    fn ack_timeout_ms(&self) -> i64 {
        self.ack_timeout.as_millis().min(i64::MAX as u128) as i64
    }
}

/// A pseudo-random number in 0..=max (jitter needs no cryptographic quality).
fn jitter(max: i64) -> i64 {
    use std::hash::{BuildHasher, Hasher};
    if max <= 0 {
        return 0;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() % (max as u64 + 1)) as i64
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Events that come due from now on.
    Latest,
    /// Every retained event.
    Earliest,
    /// Events due at or after this time (ms since epoch).
    Timestamp(i64),
}

impl Start {
    fn to_command(self) -> (StartKind, i64) {
        match self {
            Start::Latest => (StartKind::StartLatest, 0),
            Start::Earliest => (StartKind::StartEarliest, 0),
            Start::Timestamp(ts) => (StartKind::StartTimestamp, ts),
        }
    }
}

/// An ack or a nack of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleItem {
    pub topic: String,
    /// The event's fire sequence number in its topic.
    pub seq: u64,
    /// The attempt the delivery was (a nack of an older attempt is ignored).
    pub attempt: u32,
    pub op: SettleOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOp {
    Ack,
    /// Redeliver after this delay (0 = the backoff policy).
    Nack {
        delay_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleResult {
    Acked,
    Nacked,
    /// Not in flight: already acked, never delivered, or unknown.
    Unknown,
}

/// What the leader knows of a group that the state machine does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRuntime {
    pub topic: String,
    pub group: String,
    /// Ids of the attached members.
    pub members: Vec<u64>,
    /// Delivered and unacked, or waiting to be redelivered.
    pub inflight: u64,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, PartitionError>>;

/// Metric handles, looked up once rather than per delivery.
pub(crate) struct Meters {
    deliveries: metrics::Counter,
    redeliveries: metrics::Counter,
    lateness: metrics::Histogram,
}

impl Meters {
    pub fn new() -> Meters {
        Meters {
            deliveries: metrics::counter!("chronos_deliveries_total"),
            redeliveries: metrics::counter!("chronos_redeliveries_total"),
            lateness: metrics::histogram!("chronos_delivery_lateness_seconds"),
        }
    }
}

/// Requests to the partition's owner: commands that change what is pending
/// or fired, and consumer groups' requests.
pub(crate) enum Control {
    /// A command the owner proposes in its term, answered when applied:
    /// a cancel or a redrive changes the pending set and the fire logs the
    /// term works from, so it is ordered with the term's own proposals.
    Propose {
        cmd: crate::types::Command,
        reply: Reply<crate::types::Applied>,
    },
    Group(GroupControl),
}

impl From<GroupControl> for Control {
    fn from(c: GroupControl) -> Control {
        Control::Group(c)
    }
}

/// Consumer groups' requests.
pub(crate) enum GroupControl {
    Attach {
        topic: String,
        group: String,
        start: Start,
        member: std::sync::Arc<Member>,
        reply: Reply<()>,
    },
    Detach {
        member: u64,
    },
    Settle {
        group: String,
        items: Vec<SettleItem>,
        /// Record at once: the caller waits for the answer.
        wait: bool,
        reply: Reply<Vec<SettleResult>>,
    },
    Seek {
        topic: String,
        group: String,
        ts: i64,
        reply: Reply<()>,
    },
    Delete {
        topic: String,
        group: String,
        reply: Reply<Option<crate::types::GroupDeleted>>,
    },
    Runtime {
        reply: Reply<Vec<GroupRuntime>>,
    },
}

/// The public form of a stored event.
pub fn event_of(record: EventRecord) -> Event {
    Event {
        message_id: record.message_id,
        schedule_ts: record.schedule_ts,
        payload: record.payload,
        topic: record.topic,
        key: record.key,
        headers: record.headers,
    }
}

/// The opaque id a member acks a delivery with: `partition:topic:seq:attempt`
/// (topic names cannot contain ':').
pub fn delivery_id(partition: u32, topic: &str, seq: u64, attempt: u32) -> String {
    // One per delivery: written directly, not through `format!`'s machinery
    // (3 % of the server's CPU while a burst drains).
    let mut numbers = itoa::Buffer::new();
    let mut id = String::with_capacity(topic.len() + 36);
    id.push_str(numbers.format(partition));
    id.push(':');
    id.push_str(topic);
    id.push(':');
    id.push_str(numbers.format(seq));
    id.push(':');
    id.push_str(numbers.format(attempt));
    id
}

/// The parts of a delivery id, or None if it is not one.
pub fn parse_delivery_id(id: &str) -> Option<(u32, String, u64, u32)> {
    let mut parts = id.split(':');
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.parse().ok()?;
    if parts.next().is_some() || topic.is_empty() {
        return None;
    }
    Some((partition, topic.to_string(), seq, attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_equal_jitter_and_caps() {
        let o = DeliveryOptions {
            backoff_base: Duration::from_millis(1000),
            backoff_max: Duration::from_millis(5000),
            ..DeliveryOptions::default()
        };
        for _ in 0..200 {
            let b1 = o.backoff_ms(1);
            let b2 = o.backoff_ms(2);
            let b3 = o.backoff_ms(3);
            let b9 = o.backoff_ms(9);
            assert!((500..=1000).contains(&b1), "{b1}");
            assert!((1000..=2000).contains(&b2), "{b2}");
            assert!((2000..=4000).contains(&b3), "{b3}");
            assert!((2500..=5000).contains(&b9), "{b9}");
        }
        let huge = o.backoff_ms(u32::MAX);
        assert!((2500..=5000).contains(&huge), "{huge}");
    }

    #[test]
    fn delivery_ids_round_trip_and_reject_garbage() {
        let id = delivery_id(3, "orders.v1-x", 42, 2);
        assert_eq!(id, "3:orders.v1-x:42:2");
        assert_eq!(
            delivery_id(u32::MAX, "t", u64::MAX, u32::MAX),
            format!("{}:t:{}:{}", u32::MAX, u64::MAX, u32::MAX)
        );
        assert_eq!(
            parse_delivery_id(&id),
            Some((3, "orders.v1-x".into(), 42, 2))
        );
        for bad in [
            "",
            "1",
            "1:t:2",
            "x:t:1:1",
            "1::1:1",
            "1:t:1:1:1",
            "1:t:-1:1",
        ] {
            assert_eq!(parse_delivery_id(bad), None, "{bad:?}");
        }
    }
}
