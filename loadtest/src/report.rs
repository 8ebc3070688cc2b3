//! What a `scheduled` run measured, and how it is printed: text for people, one
//! JSON object with `--json`.
//!
//! [`Counters`] is what one consume stream saw; they add up per group and for the
//! whole run. Times are wall-clock microseconds since the Unix epoch, the same
//! clock `schedule_ts` is written in (so both ends must share a clock: run the
//! load generator on the server's machine).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::rss::RssStats;

/// Highest lateness the histogram resolves (one hour); larger values saturate.
const LATENESS_MAX_US: u64 = 3_600_000_000;

/// Wall clock, microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as i64)
}

/// Prints a notice to stderr over the progress line.
pub fn notice(message: &str) {
    eprintln!("\r{message:<80}");
}

/// What one or more consume streams received and acked.
pub struct Counters {
    /// Lateness of first receipts, µs: receive time − `schedule_ts`.
    pub lateness_us: Histogram<u64>,
    /// Every delivery, duplicates included.
    pub deliveries: u64,
    /// First receipts of an id by its group.
    pub unique: u64,
    /// Receipts of an id the group had already received.
    pub duplicates: u64,
    /// Deliveries with `attempt` > 1.
    pub redeliveries: u64,
    /// Deliveries received before their `schedule_ts`: must stay 0.
    pub early: u64,
    pub early_worst_us: i64,
    /// Ids not of this run, and responses without a body.
    pub foreign: u64,
    pub malformed: u64,
    /// Wall clock of the first and last first-receipt (0 = none).
    pub first_unique_us: i64,
    pub last_unique_us: i64,
    /// Wall clock when the last ack carrying a first receipt was sent (0 = none).
    pub last_first_ack_us: i64,
    /// Delivery ids sent in acks, and the server's answers.
    pub acks_sent: u64,
    pub acked: u64,
    pub nacked: u64,
    pub ack_unknown: u64,
    /// Why streams ended early.
    pub errors: Vec<String>,
}

impl Counters {
    pub fn new() -> Self {
        Counters {
            lateness_us: Histogram::new_with_max(LATENESS_MAX_US, 3)
                .expect("constant histogram bounds are valid"),
            deliveries: 0,
            unique: 0,
            duplicates: 0,
            redeliveries: 0,
            early: 0,
            early_worst_us: 0,
            foreign: 0,
            malformed: 0,
            first_unique_us: 0,
            last_unique_us: 0,
            last_first_ack_us: 0,
            acks_sent: 0,
            acked: 0,
            nacked: 0,
            ack_unknown: 0,
            errors: Vec::new(),
        }
    }

    /// A group's first receipt of an id at `received_us`, `lateness_us` after its schedule.
    pub fn note_first(&mut self, received_us: i64, lateness_us: i64) {
        self.unique += 1;
        self.lateness_us
            .saturating_record(lateness_us.max(0) as u64);
        if self.first_unique_us == 0 {
            self.first_unique_us = received_us;
        }
        self.last_unique_us = received_us;
    }

    /// A delivery `by_us` before its `schedule_ts`: the engine broke its promise.
    pub fn note_early(&mut self, by_us: i64, group: &str, message_id: &str) {
        self.early += 1;
        self.early_worst_us = self.early_worst_us.max(by_us);
        if self.early <= 5 {
            notice(&format!(
                "EARLY DELIVERY: group {group} got {message_id} {by_us} µs before its schedule_ts"
            ));
        }
    }

    /// Ack items the server has answered (acked, nacked or unknown).
    pub fn ack_answers(&self) -> u64 {
        self.acked + self.nacked + self.ack_unknown
    }

    pub fn note_error(&mut self, error: String) {
        notice(&error);
        self.errors.push(error);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Counters) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.lateness_us.add(&other.lateness_us);
        self.deliveries += other.deliveries;
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.redeliveries += other.redeliveries;
        self.early += other.early;
        self.early_worst_us = self.early_worst_us.max(other.early_worst_us);
        self.foreign += other.foreign;
        self.malformed += other.malformed;
        self.first_unique_us = min_set(self.first_unique_us, other.first_unique_us);
        self.last_unique_us = self.last_unique_us.max(other.last_unique_us);
        self.last_first_ack_us = self.last_first_ack_us.max(other.last_first_ack_us);
        self.acks_sent += other.acks_sent;
        self.acked += other.acked;
        self.nacked += other.nacked;
        self.ack_unknown += other.ack_unknown;
        self.errors.extend(other.errors.iter().cloned());
    }
}

/// The smaller of two timestamps where 0 means "unset".
fn min_set(a: i64, b: i64) -> i64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// The publish phase.
#[derive(Default)]
pub struct PublishStats {
    /// Events the server accepted, and events given up on after retries.
    pub accepted: u64,
    pub failed: u64,
    /// Failed RPCs, retries included.
    pub rpc_errors: u64,
    /// Accepted as duplicates of an earlier publish (a retry whose first try had landed).
    pub duplicates: u64,
    /// Accepted with `due_ts` > `schedule_ts`: published after their time had come.
    pub due_late: u64,
    pub started_us: i64,
    pub finished_us: i64,
}

/// One group's outcome.
pub struct GroupReport {
    pub name: String,
    pub counters: Counters,
    pub missing: u64,
    /// The first few missing message ids.
    pub missing_ids: Vec<String>,
}

/// Everything a run prints.
pub struct Report {
    pub topic: String,
    pub events: u64,
    pub rate: f64,
    pub burst: bool,
    pub consumers_per_group: usize,
    pub first_due_us: i64,
    pub last_due_us: i64,
    pub publish: PublishStats,
    pub groups: Vec<GroupReport>,
    pub total: Counters,
    pub timed_out: bool,
    pub rss: Option<RssStats>,
}

fn secs(from_us: i64, to_us: i64) -> f64 {
    (to_us - from_us) as f64 / 1e6
}

impl Report {
    pub fn missing(&self) -> u64 {
        self.groups.iter().map(|g| g.missing).sum()
    }

    fn publish_seconds(&self) -> f64 {
        secs(self.publish.started_us, self.publish.finished_us).max(1e-9)
    }

    /// Unique deliveries per second over all groups, first to last first receipt.
    fn delivery_rate(&self) -> (f64, f64) {
        let t = &self.total;
        let seconds = secs(t.first_unique_us, t.last_unique_us).max(1e-9);
        (seconds, t.unique as f64 / seconds)
    }

    /// From the last due time to the last ack of a first receipt (`--burst`: the
    /// due instant to the last ack), and the unique delivery rate over it (only
    /// meaningful for `--burst`).
    fn drain(&self) -> Option<(f64, f64)> {
        let last_ack = self.total.last_first_ack_us;
        (last_ack > 0).then(|| {
            let seconds = secs(self.last_due_us, last_ack);
            (seconds, self.total.unique as f64 / seconds.max(1e-9))
        })
    }

    fn lateness_ms(&self) -> [(&'static str, f64); 5] {
        let h = &self.total.lateness_us;
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        [
            ("p50", q(0.5)),
            ("p90", q(0.9)),
            ("p99", q(0.99)),
            ("p999", q(0.999)),
            ("max", h.max() as f64 / 1000.0),
        ]
    }

    pub fn to_json(&self) -> Value {
        let t = &self.total;
        let (delivery_seconds, delivery_rate) = self.delivery_rate();
        let drain = self.drain();
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|g| {
                json!({"name": g.name, "unique": g.counters.unique, "duplicates": g.counters.duplicates,
                       "redeliveries": g.counters.redeliveries, "missing": g.missing, "missing_ids": g.missing_ids})
            })
            .collect();
        let lateness: serde_json::Map<String, Value> = self
            .lateness_ms()
            .into_iter()
            .map(|(name, ms)| (name.to_string(), json!(ms)))
            .collect();
        json!({
            "mode": "scheduled", "topic": self.topic, "events": self.events, "rate": self.rate, "burst": self.burst,
            "groups": self.groups.len(), "consumers_per_group": self.consumers_per_group,
            "publish": {"accepted": self.publish.accepted, "failed": self.publish.failed, "rpc_errors": self.publish.rpc_errors,
                        "duplicates": self.publish.duplicates, "due_late": self.publish.due_late,
                        "seconds": self.publish_seconds(), "events_per_sec": self.publish.accepted as f64 / self.publish_seconds(),
                        "finished_before_first_due_ms": (self.first_due_us - self.publish.finished_us) as f64 / 1000.0},
            "delivery": {"deliveries": t.deliveries, "unique": t.unique, "seconds": delivery_seconds, "unique_per_sec": delivery_rate,
                         "last_due_to_last_ack_s": drain.map(|d| d.0),
                         "burst_unique_per_sec": drain.filter(|_| self.burst).map(|d| d.1),
                         "duplicates": t.duplicates, "redeliveries": t.redeliveries, "early": t.early, "early_worst_ms": t.early_worst_us as f64 / 1000.0,
                         "missing": self.missing(), "foreign": t.foreign, "malformed": t.malformed, "timed_out": self.timed_out,
                         "stream_errors": t.errors},
            "acks": {"sent": t.acks_sent, "acked": t.acked, "nacked": t.nacked, "unknown": t.ack_unknown},
            "lateness_ms": lateness,
            "per_group": groups,
            "server_rss_mib": self.rss.as_ref().map(|r| json!({"max": r.max_mib(), "final": r.final_mib(), "samples": r.samples})),
        })
    }

    pub fn print_text(&self) {
        let t = &self.total;
        println!(
            "mode scheduled  topic {}  events {}  {}  groups {} x {} consumers",
            self.topic,
            self.events,
            if self.burst {
                "burst".to_string()
            } else {
                format!("due at {:.0}/s", self.rate)
            },
            self.groups.len(),
            self.consumers_per_group
        );
        let p = &self.publish;
        println!(
            "publish: {} events in {:.2}s = {:.0} events/s  (failed {}, RPC errors {}, duplicates {}); done {:.0} ms before the first due time",
            p.accepted,
            self.publish_seconds(),
            p.accepted as f64 / self.publish_seconds(),
            p.failed,
            p.rpc_errors,
            p.duplicates,
            (self.first_due_us - p.finished_us) as f64 / 1000.0
        );
        if p.due_late > 0 {
            println!("  WARNING: {} events were published after their schedule_ts (lateness includes publishing)", p.due_late);
        }
        let (seconds, rate) = self.delivery_rate();
        println!(
            "delivery: {} unique of {} over {:.2}s = {:.0} unique/s  ({} deliveries)",
            t.unique,
            self.events * self.groups.len() as u64,
            seconds,
            rate,
            t.deliveries
        );
        match self.drain() {
            Some((seconds, rate)) if self.burst => {
                println!("  due instant -> last ack: {seconds:.3}s = {rate:.0} unique/s");
            }
            Some((seconds, _)) => println!("  last due time -> last ack: {seconds:.3}s"),
            None => {}
        }
        let lateness = self.lateness_ms();
        let lateness: Vec<String> = lateness
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.3}"))
            .collect();
        println!(
            "lateness ms (receive - schedule_ts): {}",
            lateness.join("  ")
        );
        println!(
            "duplicates {}  redeliveries {}  missing {}  foreign {}  acks sent {} (acked {}, nacked {}, unknown {})",
            t.duplicates, t.redeliveries, self.missing(), t.foreign, t.acks_sent, t.acked, t.nacked, t.ack_unknown
        );
        for g in self
            .groups
            .iter()
            .filter(|g| self.groups.len() > 1 || g.missing > 0)
        {
            println!(
                "  group {}: unique {}  duplicates {}  missing {}",
                g.name, g.counters.unique, g.counters.duplicates, g.missing
            );
            if !g.missing_ids.is_empty() {
                println!("    missing e.g. {}", g.missing_ids.join(" "));
            }
        }
        if let Some(rss) = &self.rss {
            println!(
                "server RSS: max {:.1} MiB  final {:.1} MiB  ({} samples)",
                rss.max_mib(),
                rss.final_mib(),
                rss.samples
            );
        }
        if self.timed_out {
            println!("TIMED OUT before every group had every event");
        }
        if t.early > 0 {
            println!(
                "EARLY DELIVERIES: {} (worst {:.3} ms before schedule_ts)",
                t.early,
                t.early_worst_us as f64 / 1000.0
            );
        } else {
            println!("early deliveries: 0");
        }
    }
}
