//! What a delivery run (`schedule`, `deliver`, `e2e`) measured, and how it is
//! printed: a table for people, one JSON object with `--json`.
//!
//! [`Counters`] is what one consume stream saw; they add up per group and for the
//! whole run. Times are wall-clock microseconds since the Unix epoch, the same
//! clock `schedule_ts` is written in (so both ends must share a clock: run the
//! load generator on the server's machine).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::progress::{notice, Table};
use crate::rss::RssStats;
use crate::stats::{curve_json, latency_histogram, LatencySummary};
use crate::workload::{Outcome, WorkloadArgs};

/// Wall clock, microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as i64)
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
            lateness_us: latency_histogram(),
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

impl PublishStats {
    /// Adds one publisher's counts to these.
    pub fn add(&mut self, other: &PublishStats) {
        self.accepted += other.accepted;
        self.rpc_errors += other.rpc_errors;
        self.duplicates += other.duplicates;
        self.due_late += other.due_late;
    }
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
    /// `schedule`, `deliver` or `e2e`.
    pub mode: &'static str,
    pub topic: String,
    pub events: u64,
    /// How due times were laid out, for people: `due at 1000/s`, `burst`, ….
    pub due: String,
    pub consumers_per_group: usize,
    pub first_due_us: i64,
    /// Where the drain is measured from: the last due time, or (`deliver`) when
    /// consumers connected to the backlog; `None` when there is no drain (`e2e`).
    pub drain_from_us: Option<i64>,
    /// Whether everything was due by `drain_from_us`, so the drain has a rate
    /// (a burst or a backlog), or events came due over time (seconds only).
    pub drain_has_rate: bool,
    /// What the lateness histogram means, for the table.
    pub lateness_label: &'static str,
    pub publish: PublishStats,
    pub groups: Vec<GroupReport>,
    pub total: Counters,
    pub timed_out: bool,
    pub rss: Option<RssStats>,
    /// Mode-specific results, added to the JSON and the table as they are.
    pub extra: Vec<(&'static str, Value)>,
}

impl Report {
    /// A delivery run's report with no drain, no extras and lateness against
    /// `schedule_ts`; the caller sets what its mode knows better.
    pub fn new(
        mode: &'static str,
        args: &WorkloadArgs,
        topic: String,
        publish: PublishStats,
        outcome: Outcome,
        timed_out: bool,
    ) -> Self {
        Report {
            mode,
            topic,
            events: args.events,
            due: String::new(),
            consumers_per_group: args.consumers,
            first_due_us: publish.started_us,
            drain_from_us: None,
            drain_has_rate: false,
            lateness_label: "lateness ms (receive - schedule_ts)",
            publish,
            groups: outcome.groups,
            total: outcome.total,
            timed_out,
            rss: outcome.rss,
            extra: Vec::new(),
        }
    }
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

    /// From `drain_from_us` to the last ack of a first receipt, and the unique
    /// delivery rate over it (meaningful when everything was due by then).
    fn drain(&self) -> Option<(f64, f64)> {
        let last_ack = self.total.last_first_ack_us;
        let from = self.drain_from_us?;
        (last_ack > 0).then(|| {
            let seconds = secs(from, last_ack);
            (seconds, self.total.unique as f64 / seconds.max(1e-9))
        })
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
        let mut summary = json!({
            "mode": self.mode, "topic": self.topic, "events": self.events, "due": self.due,
            "groups": self.groups.len(), "consumers_per_group": self.consumers_per_group,
            "publish": {"accepted": self.publish.accepted, "failed": self.publish.failed, "rpc_errors": self.publish.rpc_errors,
                        "duplicates": self.publish.duplicates, "due_late": self.publish.due_late,
                        "seconds": self.publish_seconds(), "events_per_sec": self.publish.accepted as f64 / self.publish_seconds(),
                        "finished_before_first_due_ms": (self.first_due_us - self.publish.finished_us) as f64 / 1000.0},
            "delivery": {"deliveries": t.deliveries, "unique": t.unique, "seconds": delivery_seconds, "unique_per_sec": delivery_rate,
                         "drain_seconds": drain.map(|d| d.0), "drain_unique_per_sec": drain.filter(|_| self.drain_has_rate).map(|d| d.1),
                         "duplicates": t.duplicates, "redeliveries": t.redeliveries, "early": t.early, "early_worst_ms": t.early_worst_us as f64 / 1000.0,
                         "missing": self.missing(), "foreign": t.foreign, "malformed": t.malformed, "timed_out": self.timed_out,
                         "stream_errors": t.errors},
            "acks": {"sent": t.acks_sent, "acked": t.acked, "nacked": t.nacked, "unknown": t.ack_unknown},
            "lateness_ms": LatencySummary::of(&t.lateness_us).to_json(),
            "lateness_curve_ms": curve_json(&t.lateness_us),
            "per_group": groups,
            "server_rss_mib": self.rss.as_ref().map(|r| json!({"max": r.max_mib(), "final": r.final_mib(), "samples": r.samples})),
        });
        for (key, value) in &self.extra {
            summary[*key] = value.clone();
        }
        summary
    }

    pub fn table(&self) -> Table {
        let t = &self.total;
        let p = &self.publish;
        let mut table = Table::new(format!(
            "mode {}  topic {}  events {}  {}  groups {} x {} consumers",
            self.mode,
            self.topic,
            self.events,
            self.due,
            self.groups.len(),
            self.consumers_per_group
        ));
        table.row(
            "publish",
            format!(
                "{} events in {:.2}s = {:.0}/s  (failed {}, RPC errors {}, duplicates {}, due late {})",
                p.accepted,
                self.publish_seconds(),
                p.accepted as f64 / self.publish_seconds(),
                p.failed,
                p.rpc_errors,
                p.duplicates,
                p.due_late
            ),
        );
        let (seconds, rate) = self.delivery_rate();
        table.row(
            "delivered",
            format!(
                "{} unique of {} over {seconds:.2}s = {rate:.0}/s  ({} deliveries)",
                t.unique,
                self.events * self.groups.len() as u64,
                t.deliveries
            ),
        );
        if let Some((seconds, rate)) = self.drain() {
            table.row(
                "drain",
                format!("{seconds:.3}s to the last ack = {rate:.0}/s"),
            );
        }
        table.row(
            self.lateness_label,
            LatencySummary::of(&t.lateness_us).to_text(),
        );
        table.row(
            "duplicates",
            format!("{}  (redeliveries {})", t.duplicates, t.redeliveries),
        );
        table.row("missing", self.missing().to_string());
        table.row(
            "early",
            if t.early > 0 {
                format!(
                    "{} (worst {:.3} ms) EARLY DELIVERIES",
                    t.early,
                    t.early_worst_us as f64 / 1000.0
                )
            } else {
                "0".to_string()
            },
        );
        table.row(
            "acks",
            format!(
                "sent {} (acked {}, nacked {}, unknown {}), foreign ids {}",
                t.acks_sent, t.acked, t.nacked, t.ack_unknown, t.foreign
            ),
        );
        for g in self.groups.iter().filter(|g| g.missing > 0) {
            table.row(
                format!("group {}", g.name),
                format!("missing {}, e.g. {}", g.missing, g.missing_ids.join(" ")),
            );
        }
        if let Some(rss) = &self.rss {
            table.row(
                "server RSS",
                format!(
                    "max {:.1} MiB  final {:.1} MiB  ({} samples)",
                    rss.max_mib(),
                    rss.final_mib(),
                    rss.samples
                ),
            );
        }
        for (key, value) in self.extra.iter().filter(|(_, v)| !v.is_object()) {
            table.row(key.replace('_', " "), value.to_string());
        }
        if self.timed_out {
            table.row("TIMED OUT", "before every group had every event");
        }
        table
    }

    /// Prints the report (`--json` or the table), then fails if an event is
    /// missing or one came early.
    pub fn finish(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", self.to_json());
        } else {
            self.table().print();
        }
        let (missing, early) = (self.missing(), self.total.early);
        anyhow::ensure!(
            missing == 0 && early == 0,
            "{missing} events missing, {early} early deliveries"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_merge_adds_up() {
        let mut a = Counters::new();
        let mut b = Counters::new();
        a.note_first(2_000, 100);
        b.note_first(1_000, 300);
        b.duplicates = 2;
        b.note_early(50, "g", "id");
        a.merge(&b);
        assert_eq!((a.unique, a.duplicates, a.early), (2, 2, 1));
        assert_eq!((a.first_unique_us, a.last_unique_us), (1_000, 2_000));
        assert_eq!(a.lateness_us.len(), 2);
        assert_eq!(a.lateness_us.max(), 300);
        assert_eq!(a.early_worst_us, 50);
    }
}
