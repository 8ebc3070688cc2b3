//! One member of a consumer group on one `Consume` stream, and the [`Tracker`]
//! all members share.
//!
//! A member subscribes (the first message of the stream), then records every
//! delivery: its lateness against `schedule_ts`, whether it came early, whether
//! its group had already seen the message id. It acks every delivery, in batches
//! of `ack_batch` ids or whatever is pending every [`ACK_FLUSH`]. It stops when the
//! shutdown signal flips, after flushing its pending acks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chronos_proto::v1::event_service_client::EventServiceClient;
use chronos_proto::v1::{
    consume_request, consume_response, AckItem, AckRequest, ConsumeRequest, ConsumeResponse,
    Delivery, Event, StartPosition, SubscribeRequest,
};
use tokio::sync::{mpsc, watch, Notify};
use tonic::transport::Channel;
use tonic::Streaming;

use crate::report::{now_us, Counters};

/// Pending acks are sent at least this often, even when fewer than `ack_batch`.
pub const ACK_FLUSH: Duration = Duration::from_millis(5);
/// After the stop, how long a member waits for the server to answer its last acks.
pub const ACK_ANSWER_GRACE: Duration = Duration::from_secs(1);
/// Wait before each attempt to subscribe again after a stream broke.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(100);

/// Which message ids each group has received, and the signal the run waits on.
///
/// Message ids are `<prefix><index>` with index in `0..events`, so a group's
/// receipts are a bitset: marking is one `fetch_or`, shared by the group's members
/// without a lock.
pub struct Tracker {
    prefix: String,
    events: u64,
    groups: Vec<GroupSeen>,
    unique_total: AtomicU64,
    members_alive: AtomicUsize,
    changed: Notify,
}

struct GroupSeen {
    bits: Vec<AtomicU64>,
    unique: AtomicU64,
}

/// What marking a receipt found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Receipt {
    /// The group's first receipt of this id; `group_complete` when it was the last one missing.
    First { group_complete: bool },
    /// The group had this id already: a duplicate.
    Repeat,
}

impl Tracker {
    pub fn new(prefix: String, events: u64, groups: usize) -> Self {
        let words = events.div_ceil(64) as usize;
        Tracker {
            prefix,
            events,
            groups: (0..groups)
                .map(|_| GroupSeen {
                    bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
                    unique: AtomicU64::new(0),
                })
                .collect(),
            unique_total: AtomicU64::new(0),
            members_alive: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    /// The event index a message id of this run encodes; `None` for a foreign id.
    pub fn index_of(&self, message_id: &str) -> Option<u64> {
        let index: u64 = message_id.strip_prefix(&self.prefix)?.parse().ok()?;
        (index < self.events).then_some(index)
    }

    /// Records that `group` received event `index`.
    pub fn mark(&self, group: usize, index: u64) -> Receipt {
        let seen = &self.groups[group];
        let bit = 1u64 << (index % 64);
        let before = seen.bits[(index / 64) as usize].fetch_or(bit, Ordering::Relaxed);
        if before & bit != 0 {
            return Receipt::Repeat;
        }
        let unique = seen.unique.fetch_add(1, Ordering::Relaxed) + 1;
        debug_assert!(
            unique <= self.events,
            "a group cannot see more ids than exist"
        );
        let total = self.unique_total.fetch_add(1, Ordering::Relaxed) + 1;
        if total == self.events * self.groups.len() as u64 {
            self.changed.notify_one();
        }
        Receipt::First {
            group_complete: unique == self.events,
        }
    }

    /// Distinct ids `group` has received.
    pub fn unique(&self, group: usize) -> u64 {
        self.groups[group].unique.load(Ordering::Relaxed)
    }

    /// Up to `limit` message ids `group` has not received, lowest index first.
    pub fn missing_ids(&self, group: usize, limit: usize) -> Vec<String> {
        (0..self.events)
            .filter(|&index| {
                let word = self.groups[group].bits[(index / 64) as usize].load(Ordering::Relaxed);
                word & (1 << (index % 64)) == 0
            })
            .take(limit)
            .map(|index| format!("{}{index}", self.prefix))
            .collect()
    }

    /// Distinct (group, id) receipts over all groups.
    pub fn unique_total(&self) -> u64 {
        self.unique_total.load(Ordering::Relaxed)
    }

    /// Every group has every id.
    pub fn complete(&self) -> bool {
        self.unique_total() == self.events * self.groups.len() as u64
    }

    /// Members whose stream is still open.
    pub fn members_alive(&self) -> usize {
        self.members_alive.load(Ordering::Relaxed)
    }

    /// Resolves after the run completes or a member's stream ends (check which).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn member_exited(&self) {
        self.members_alive.fetch_sub(1, Ordering::Relaxed);
        self.changed.notify_one();
    }
}

/// How one member subscribes and acks.
#[derive(Clone)]
pub struct MemberConfig {
    pub group: usize,
    pub group_name: String,
    pub topic: String,
    pub max_inflight: u32,
    pub ack_batch: usize,
    /// Nodes to subscribe again on, in turn, when the stream breaks (empty:
    /// the member ends with its stream).
    pub resubscribe: Vec<String>,
}

/// A subscribed member, ready to [`run`](Member::run).
pub struct Member {
    config: MemberConfig,
    tracker: std::sync::Arc<Tracker>,
    // Unbounded, yet bounded in practice: the server sends at most `max_inflight`
    // deliveries before acks free the window, and each ack message carries up to
    // `ack_batch` of them.
    outbound: mpsc::UnboundedSender<ConsumeRequest>,
    inbound: Streaming<ConsumeResponse>,
    pending_acks: Vec<AckItem>,
    pending_has_first: bool,
    counters: Counters,
}

impl Member {
    /// Opens the stream and sends the subscribe. Returns once the server has
    /// answered with its response headers, i.e. accepted the stream.
    pub async fn subscribe(
        channel: Channel,
        config: MemberConfig,
        tracker: std::sync::Arc<Tracker>,
    ) -> anyhow::Result<Self> {
        let (outbound, inbound) = open(channel, &config).await?;
        tracker.members_alive.fetch_add(1, Ordering::Relaxed);
        Ok(Member {
            pending_acks: Vec::with_capacity(config.ack_batch),
            config,
            tracker,
            outbound,
            inbound,
            pending_has_first: false,
            counters: Counters::new(),
        })
    }

    /// The stream broke: subscribes again on the configured nodes in turn
    /// until one accepts or `stop` is set. Acks not answered are forgotten
    /// (their deliveries come again). False when it gives up.
    async fn resubscribe(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        self.pending_acks.clear();
        self.counters.acks_sent = self.counters.ack_answers();
        let mut attempt = 0;
        loop {
            if *stop.borrow() || self.config.resubscribe.is_empty() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
                _ = stop.wait_for(|stop| *stop) => return false,
            }
            let addr = &self.config.resubscribe[attempt % self.config.resubscribe.len()];
            attempt += 1;
            let opened = match crate::workload::connect(addr).await {
                Ok(channel) => open(channel, &self.config).await,
                Err(e) => Err(e),
            };
            if let Ok((outbound, inbound)) = opened {
                (self.outbound, self.inbound) = (outbound, inbound);
                return true;
            }
        }
    }

    /// Receives and acks until `stop` is set or the stream ends; returns what it saw.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Counters {
        let mut flush = tokio::time::interval(ACK_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stream_open = loop {
            let broke = tokio::select! {
                message = self.inbound.message() => !self.on_message(message),
                _ = flush.tick() => {
                    self.flush_acks();
                    false
                }
                _ = stop.wait_for(|stop| *stop) => break true,
            };
            if broke && !self.resubscribe(&mut stop).await {
                break false;
            }
        };
        self.tracker.member_exited();
        self.flush_acks();
        if stream_open {
            // Bounded: the answers to the last acks, so `acked` matches `acks_sent`.
            let _ = tokio::time::timeout(ACK_ANSWER_GRACE, async {
                while self.counters.ack_answers() < self.counters.acks_sent {
                    let message = self.inbound.message().await;
                    if !self.on_message(message) {
                        break;
                    }
                    self.flush_acks();
                }
            })
            .await;
        }
        self.counters
    }

    /// Handles what the stream yielded; false when the stream is over.
    fn on_message(&mut self, message: Result<Option<ConsumeResponse>, tonic::Status>) -> bool {
        let error = match message {
            Ok(Some(response)) => {
                self.on_response(response);
                return true;
            }
            Ok(None) => "server closed the stream".to_string(),
            Err(status) => status.to_string(),
        };
        let group = &self.config.group_name;
        self.counters.note_error(format!("{group}: {error}"));
        false
    }

    fn on_response(&mut self, response: ConsumeResponse) {
        match response.kind {
            Some(consume_response::Kind::Delivery(delivery)) => self.on_delivery(delivery),
            Some(consume_response::Kind::Ack(ack)) => {
                self.counters.acked += u64::from(ack.acked);
                self.counters.nacked += u64::from(ack.nacked);
                self.counters.ack_unknown += ack.unknown.len() as u64;
            }
            None => self.counters.malformed += 1,
        }
    }

    fn on_delivery(&mut self, delivery: Delivery) {
        let received_us = now_us();
        let counters = &mut self.counters;
        counters.deliveries += 1;
        if delivery.attempt > 1 {
            counters.redeliveries += 1;
        }
        self.pending_acks.push(AckItem {
            delivery_id: delivery.delivery_id,
            ..Default::default()
        });
        let mut group_complete = false;
        match delivery.event {
            None => counters.malformed += 1,
            Some(event) => {
                let receipt = account(counters, &self.tracker, &self.config, &event, received_us);
                if let Some(Receipt::First {
                    group_complete: complete,
                }) = receipt
                {
                    self.pending_has_first = true;
                    group_complete = complete;
                }
            }
        }
        // The group's last missing id is acked at once, so "last ack" is exact.
        // At most half the window waits, as the SDKs do: with a small
        // --max-inflight the member would otherwise idle until the flush tick.
        let window = self.config.max_inflight as usize;
        let batch = match window {
            0 => self.config.ack_batch,
            _ => self.config.ack_batch.min((window / 2).max(1)),
        };
        if group_complete || self.pending_acks.len() >= batch {
            self.flush_acks();
        }
    }

    fn flush_acks(&mut self) {
        if self.pending_acks.is_empty() {
            return;
        }
        let items = std::mem::replace(
            &mut self.pending_acks,
            Vec::with_capacity(self.config.ack_batch),
        );
        let count = items.len() as u64;
        let request = ConsumeRequest {
            kind: Some(consume_request::Kind::Ack(AckRequest {
                consumer_group: self.config.group_name.clone(),
                items,
                wait: false,
            })),
        };
        // A send fails only when the stream is gone; the receive side reports that.
        if self.outbound.send(request).is_ok() {
            self.counters.acks_sent += count;
            if std::mem::take(&mut self.pending_has_first) {
                self.counters.last_first_ack_us = now_us();
            }
        }
    }
}

/// Opens a Consume stream and sends the subscribe; returns once the server
/// has answered with its response headers, i.e. accepted the stream.
async fn open(
    channel: Channel,
    config: &MemberConfig,
) -> anyhow::Result<(
    mpsc::UnboundedSender<ConsumeRequest>,
    Streaming<ConsumeResponse>,
)> {
    let (outbound, rx) = mpsc::unbounded_channel();
    let subscribe = SubscribeRequest {
        consumer_group: config.group_name.clone(),
        topic: config.topic.clone(),
        partition_id: None,
        max_inflight: config.max_inflight,
        start: StartPosition::Latest as i32,
        start_ts: 0,
        keep_unacked: false,
        max_deliveries: 0,
        max_wait_ms: 0,
    };
    outbound.send(ConsumeRequest {
        kind: Some(consume_request::Kind::Subscribe(subscribe)),
    })?;
    let requests = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|request| (request, rx))
    });
    let inbound = EventServiceClient::new(channel)
        .consume(requests)
        .await?
        .into_inner();
    Ok((outbound, inbound))
}

/// Counts one received event against its group: early (before its
/// `schedule_ts`), foreign (not this run's), a repeat, or a first receipt with
/// its lateness. `None` for a foreign id.
fn account(
    counters: &mut Counters,
    tracker: &Tracker,
    config: &MemberConfig,
    event: &Event,
    received_us: i64,
) -> Option<Receipt> {
    let scheduled_us = event.schedule_ts.saturating_mul(1000);
    if received_us < scheduled_us {
        counters.note_early(
            scheduled_us - received_us,
            &config.group_name,
            &event.message_id,
        );
    }
    let Some(index) = tracker.index_of(&event.message_id) else {
        counters.foreign += 1;
        return None;
    };
    let receipt = tracker.mark(config.group, index);
    match receipt {
        Receipt::Repeat => counters.duplicates += 1,
        Receipt::First { .. } => counters.note_first(received_us, received_us - scheduled_us),
    }
    Some(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(group: usize) -> MemberConfig {
        MemberConfig {
            group,
            group_name: format!("g{group}"),
            topic: "t".to_string(),
            max_inflight: 10,
            ack_batch: 10,
            resubscribe: Vec::new(),
        }
    }

    fn event(id: &str, schedule_ts_ms: i64) -> Event {
        Event {
            message_id: id.to_string(),
            schedule_ts: schedule_ts_ms,
            ..Default::default()
        }
    }

    #[test]
    fn tracker_tells_first_receipts_from_repeats_per_group() {
        let tracker = Tracker::new("run-".to_string(), 3, 2);
        assert_eq!(tracker.index_of("run-2"), Some(2));
        assert_eq!(tracker.index_of("run-3"), None, "out of range");
        assert_eq!(tracker.index_of("other-1"), None, "foreign");
        assert_eq!(
            tracker.mark(0, 0),
            Receipt::First {
                group_complete: false
            }
        );
        assert_eq!(tracker.mark(0, 0), Receipt::Repeat);
        // Another group's receipt is its own first.
        assert_eq!(
            tracker.mark(1, 0),
            Receipt::First {
                group_complete: false
            }
        );
        assert_eq!(
            tracker.mark(0, 1),
            Receipt::First {
                group_complete: false
            }
        );
        assert_eq!(
            tracker.mark(0, 2),
            Receipt::First {
                group_complete: true
            }
        );
        assert_eq!((tracker.unique(0), tracker.unique(1)), (3, 1));
        assert_eq!(tracker.unique_total(), 4);
        assert!(!tracker.complete());
        assert_eq!(tracker.missing_ids(1, 5), vec!["run-1", "run-2"]);
        assert_eq!(tracker.missing_ids(1, 1), vec!["run-1"]);
        assert!(tracker.missing_ids(0, 5).is_empty());
        tracker.mark(1, 1);
        tracker.mark(1, 2);
        assert!(tracker.complete());
    }

    #[test]
    fn tracker_bitset_spans_words() {
        let tracker = Tracker::new("x".to_string(), 130, 1);
        for index in (0..130).rev() {
            assert!(matches!(tracker.mark(0, index), Receipt::First { .. }));
        }
        assert!(tracker.complete());
        assert_eq!(tracker.mark(0, 64), Receipt::Repeat);
    }

    #[test]
    fn accounting_counts_early_late_duplicate_and_foreign() {
        let tracker = Tracker::new("run-".to_string(), 3, 1);
        let config = config(0);
        let mut counters = Counters::new();
        // Due at 1000 ms, received 2 ms late: a first receipt, lateness 2000 µs.
        let first = account(
            &mut counters,
            &tracker,
            &config,
            &event("run-0", 1000),
            1_002_000,
        );
        assert_eq!(
            first,
            Some(Receipt::First {
                group_complete: false
            })
        );
        // The same id again, later: a duplicate, lateness not recorded twice.
        let again = account(
            &mut counters,
            &tracker,
            &config,
            &event("run-0", 1000),
            1_050_000,
        );
        assert_eq!(again, Some(Receipt::Repeat));
        // Received 300 µs before its due time: early, yet still its first receipt.
        account(
            &mut counters,
            &tracker,
            &config,
            &event("run-1", 2000),
            1_999_700,
        );
        // Not this run's id: foreign, and early is still checked.
        assert_eq!(
            account(&mut counters, &tracker, &config, &event("zzz", 0), 5),
            None
        );
        assert_eq!(counters.unique, 2);
        assert_eq!(counters.duplicates, 1);
        assert_eq!(counters.foreign, 1);
        assert_eq!((counters.early, counters.early_worst_us), (1, 300));
        // Early receipts record lateness 0; the on-time one 2 ms.
        assert_eq!(counters.lateness_us.len(), 2);
        assert_eq!(counters.lateness_us.max(), 2000);
        assert_eq!(
            (counters.first_unique_us, counters.last_unique_us),
            (1_002_000, 1_999_700)
        );
        // run-2 never arrived: missing.
        assert_eq!(tracker.missing_ids(0, 5), vec!["run-2"]);
        assert_eq!(3 - tracker.unique(0), 1);
    }
}
