//! A leader term's recurring schedules: stores each occurrence as an event
//! `LOOKAHEAD_MS` to `LOOKAHEAD_MS + GATHER_MS` before its nominal time, through the term's publisher, with
//! the schedule's advance in the same log entry.
//!
//! Nothing per schedule is held here: the due index in the store
//! (`scan_schedules_due`) says which schedules come due, so memory does not
//! grow with the number of schedules. A scan (reading the due index and the
//! schedules, planning their occurrences) runs on a blocking thread, not on
//! the owner, whose releases would otherwise wait for it, and gives its core
//! back every few dozen schedules (`GIVE_WAY_EVERY`). One scan or
//! proposal of occurrences is out at a time, and a schedule with a change in
//! flight (pause, update, delete) is left alone until the change applies, so
//! the advance the leader proposes always matches the schedule when it
//! applies; a plan of a schedule that changed while its scan ran is dropped.

use std::collections::{HashMap, HashSet};

use chronos_proto::internal::ScheduleAdvance;
use chronos_proto::v1::Event;
use chronos_store::{id_key, Store};

use super::ahead::Ahead;
use super::TermError;
use crate::schedule::{decode_stored, format_ts, occurrence_event, plan_occurrences};
use crate::schedule::{GATHER_MS, LOOKAHEAD_MS, MISSED_AFTER_MS};

/// Schedules looked at per scan...
const SCAN_LIMIT: usize = 256;
/// ...and after a scan that found more due than it took while storing a
/// burst early (e.g. every schedule on one cron minute): larger entries store a burst of
/// occurrences several times faster, and its own release dwarfs their cost
/// to the tail. A steady flow keeps to small entries, which keep the tail
/// short.
const BACKLOG_SCAN_LIMIT: usize = 4_096;
/// Schedules read and planned between two yields of the scan's core
/// (~100 µs of work). A scan takes ~1 ms of CPU on a blocking thread, and
/// the kernel lets a running thread finish its time slice while a runtime
/// worker that woke for a release waits: on two cores occurrences were
/// released late by as much (docs/benchmarks.md). A yield costs one system
/// call when nothing waits.
const GIVE_WAY_EVERY: usize = 32;
/// Occurrences per proposal, at most (plus one schedule's catch-up): a long
/// outage's catch-up goes out in several entries, not one huge one.
const MAX_EVENTS: usize = 10_000;

#[derive(Default)]
pub(crate) struct Recurring {
    /// The occurrences of the proposal that is out, by schedule (`id_key`s).
    out: Option<HashMap<String, Vec<Vec<u8>>>>,
    /// A scan is running; its result comes to [`scanned`](Self::scanned).
    scanning: bool,
    /// Planned by the last scan, to be proposed.
    ready: Option<Planned>,
    /// Schedules with a change proposed and not yet applied (a count each).
    changing: HashMap<String, usize>,
    /// Schedules a change was proposed for or applied to since the scan
    /// whose plans are out began: what it read of them may be stale.
    touched: HashSet<String>,
    /// The lowest next occurrence a change applied during the scan set.
    lowered: Option<i64>,
    /// The due index changed (or was never read): read it at the next step.
    rescan: bool,
    /// The last scan was full while storing a burst early: the next takes
    /// `BACKLOG_SCAN_LIMIT`.
    backlog: bool,
    /// The earliest next occurrence beyond what the last scan took.
    earliest: Option<i64>,
    /// No active schedule's next occurrence is below this: scans start here.
    floor: i64,
    /// The answer of the request out (unused: the term learns it from the proposal).
    answer: Option<PublishAnswer>,
    /// When this term began (wall clock, ms): occurrences due before it
    /// were missed, later ones are this term's to store.
    led_since: i64,
    /// How far ahead to store: further before a burst.
    ahead: Ahead,
    /// When the running scan began (wall clock, ms).
    scan_began: i64,
    /// The backlog being stored, timed to learn how fast a burst is stored.
    burst: Option<Burst>,
}

/// A backlog from its first full scan to the answer of its last proposal.
struct Burst {
    began: i64,
    events: usize,
    /// The proposal out is its last.
    last: bool,
}

/// A backlog shorter than this is not timed (the time per scan dominates it).
const TIMED_FROM: usize = 4 * BACKLOG_SCAN_LIMIT;

type PublishAnswer =
    tokio::sync::oneshot::Receiver<Result<Vec<crate::PublishOutcome>, crate::PartitionError>>;

/// Occurrences to store: their events and the schedules' advances.
pub(crate) struct Occurrences {
    pub events: Vec<Event>,
    pub advances: Vec<ScheduleAdvance>,
}

/// One schedule's occurrences, as a scan planned them.
pub(crate) struct Plan {
    schedule_id: String,
    events: Vec<Event>,
    /// The events' `id_key`s.
    ids: Vec<Vec<u8>>,
    advance: ScheduleAdvance,
}

/// What a scan found.
pub(crate) struct Planned {
    plans: Vec<Plan>,
    /// Where the next scan starts: the first due entry found (everything
    /// below it was taken, its key deleted), else the first beyond.
    floor: i64,
    /// The first due entry beyond the scanned range, if the scan saw its end.
    beyond: Option<i64>,
    /// More came due than one scan takes.
    full: bool,
    /// Full, and storing a burst early (see `BACKLOG_SCAN_LIMIT`).
    backlog: bool,
    /// Where the scanned window ended.
    until: i64,
}

/// A scan of the due index, to run away from the owner.
pub(crate) struct Scan {
    store: Store,
    floor: i64,
    now: i64,
    /// The window's end.
    until: i64,
    led_since: i64,
    /// Schedules looked at, at most.
    limit: usize,
    /// Schedules with a change in flight, left alone.
    skip: HashSet<String>,
}

impl Scan {
    /// Reads what comes due by the window's end and plans the occurrences
    /// to store.
    pub fn run(self) -> Result<Planned, TermError> {
        let until = self.until;
        let due = self
            .store
            .scan_schedules_due(self.floor, until, self.limit)?;
        let beyond = match due.len() {
            n if n == self.limit => None,
            _ => self.store.first_schedule_due(until.saturating_add(1))?,
        };
        let mut planned = Planned {
            plans: Vec::new(),
            floor: due.first().map(|(ts, _)| *ts).or(beyond).unwrap_or(until),
            beyond,
            full: due.len() == self.limit,
            backlog: false,
            until,
        };
        let wanted: Vec<&str> = due
            .iter()
            .map(|(_, id)| id.as_str())
            .filter(|id| !self.skip.contains(*id))
            .collect();
        let mut events = 0;
        'chunks: for chunk in wanted.chunks(GIVE_WAY_EVERY) {
            std::thread::yield_now();
            let stored = self.store.get_schedules(chunk)?;
            for (&schedule_id, stored) in chunk.iter().zip(stored) {
                if events >= MAX_EVENTS {
                    planned.full = true;
                    break 'chunks;
                }
                let Some(stored) = stored else {
                    continue;
                };
                let plan = self.plan(schedule_id, stored)?;
                events += plan.events.len();
                planned.plans.push(plan);
            }
        }
        let usual = self.now + LOOKAHEAD_MS + GATHER_MS;
        planned.backlog = planned.full && until > usual;
        Ok(planned)
    }

    fn plan(
        &self,
        schedule_id: &str,
        stored: chronos_store::StoredSchedule,
    ) -> Result<Plan, TermError> {
        let (record, spec) = decode_stored(stored).map_err(|source| TermError::Decode {
            what: "a schedule",
            source,
        })?;
        let (nominals, next_ts) = match plan_occurrences(&record, &spec, self.now, self.led_since) {
            Ok(planned) => planned,
            Err(e) => {
                // Validated at creation; a schedule this binary cannot
                // read stops rather than stalling every other one.
                tracing::error!(schedule = %schedule_id, "cannot compute occurrences: {e}");
                (Vec::new(), 0)
            }
        };
        if record.next_ts < self.now - MISSED_AFTER_MS {
            metrics::counter!("chronos_schedule_missed_total").increment(1);
        }
        let mut events = Vec::with_capacity(nominals.len());
        let mut ids = Vec::with_capacity(nominals.len());
        for &nominal in &nominals {
            let written = format_ts(nominal);
            let message_id = format!("{schedule_id}@{written}");
            ids.push(id_key(&spec.topic, &message_id));
            events.push(occurrence_event(&spec, message_id, nominal, written));
        }
        Ok(Plan {
            schedule_id: schedule_id.to_string(),
            events,
            ids,
            advance: ScheduleAdvance {
                schedule_id: schedule_id.to_string(),
                version: record.version,
                from_ts: record.next_ts,
                next_ts,
                stored_ts: nominals,
            },
        })
    }
}

impl Recurring {
    pub fn new(led_since: i64) -> Recurring {
        Recurring {
            led_since,
            rescan: true,
            floor: i64::MIN,
            ..Default::default()
        }
    }

    /// When there is work (wall clock, ms).
    pub fn next_wake_ms(&self, now: i64) -> i64 {
        if self.ready.is_some() {
            return now;
        }
        if self.out.is_some() || self.scanning {
            return i64::MAX;
        }
        let next = match (self.rescan, self.earliest) {
            (true, _) => now,
            (false, Some(at)) => at - LOOKAHEAD_MS,
            (false, None) => i64::MAX,
        };
        next.min(self.ahead.next_start().unwrap_or(i64::MAX))
    }

    /// A scan to run now, if one is due.
    pub fn start_scan(&mut self, store: &Store, now: i64) -> Option<Scan> {
        if self.ready.is_some() || now < self.next_wake_ms(now) {
            return None;
        }
        self.rescan = false;
        self.scanning = true;
        self.touched.clear();
        self.lowered = None;
        self.scan_began = now;
        Some(Scan {
            store: store.clone(),
            floor: self.floor,
            now,
            until: self.ahead.window_end(now),
            led_since: self.led_since,
            limit: match self.backlog {
                true => BACKLOG_SCAN_LIMIT,
                false => SCAN_LIMIT,
            },
            skip: self.changing.keys().cloned().collect(),
        })
    }

    /// A scan ended: its plans wait to be proposed, but for those of
    /// schedules that changed meanwhile (the next scan reads them again).
    pub fn scanned(&mut self, planned: Result<Planned, TermError>) -> Result<(), TermError> {
        self.scanning = false;
        let mut planned = planned?;
        planned.plans.retain(|p| !self.stale(&p.schedule_id));
        for plan in &planned.plans {
            self.ahead.taken(plan.advance.from_ts);
        }
        if !planned.full {
            self.ahead.covered(planned.until);
        }
        // A change applied during the scan may have put a schedule below
        // where the scan got to, or sooner than what it found.
        let lowered = self.lowered.take();
        self.floor = planned.floor.min(lowered.unwrap_or(i64::MAX));
        // A full scan asks for another at once; else wake for the next one
        // (a change in the window asks for a rescan when it applies).
        self.rescan |= planned.full;
        self.backlog = planned.backlog;
        if planned.backlog && self.burst.is_none() {
            self.burst = Some(Burst {
                began: self.scan_began,
                events: 0,
                last: false,
            });
        }
        if !planned.backlog && planned.plans.is_empty() {
            // It ended with the answer before this scan.
            self.burst_ended(self.scan_began);
        }
        let moved_to = planned
            .plans
            .iter()
            .map(|p| p.advance.next_ts)
            .filter(|t| *t > 0);
        self.earliest = moved_to.chain(planned.beyond).chain(lowered).min();
        if !planned.plans.is_empty() {
            self.ready = Some(planned);
        }
        Ok(())
    }

    /// The occurrences planned by the last scan, to propose now, but for
    /// those of schedules a change touched since the scan began.
    pub fn take_ready(&mut self) -> Option<Occurrences> {
        let mut planned = self.ready.take()?;
        planned.plans.retain(|p| !self.stale(&p.schedule_id));
        self.touched.clear();
        if planned.plans.is_empty() {
            return None;
        }
        let mut taken = Occurrences {
            events: Vec::new(),
            advances: Vec::new(),
        };
        let mut out = HashMap::new();
        if let Some(burst) = &mut self.burst {
            burst.events += planned.plans.iter().map(|p| p.events.len()).sum::<usize>();
            burst.last = !planned.backlog;
        }
        for plan in planned.plans {
            self.ahead.add(plan.advance.next_ts);
            taken.events.extend(plan.events);
            taken.advances.push(plan.advance);
            out.insert(plan.schedule_id, plan.ids);
        }
        self.out = Some(out);
        Some(taken)
    }

    /// The proposal of occurrences was answered (applied or not).
    pub fn awaiting(&mut self, answer: PublishAnswer) {
        self.answer = Some(answer);
    }

    /// The proposal of occurrences was answered at `now`.
    pub fn stored(&mut self, now: i64) {
        self.out = None;
        self.answer = None;
        if self.burst.as_ref().is_some_and(|b| b.last) {
            self.burst_ended(now);
        }
    }

    fn burst_ended(&mut self, now: i64) {
        if let Some(burst) = self.burst.take() {
            if burst.events >= TIMED_FROM {
                self.ahead.timed(burst.events, now - burst.began);
            }
        }
    }

    /// Whether what a scan read of `schedule_id` may no longer hold.
    fn stale(&self, schedule_id: &str) -> bool {
        self.touched.contains(schedule_id) || self.changing.contains_key(schedule_id)
    }

    /// Whether a scan's plans are out (running or waiting to be proposed):
    /// changes meanwhile are noted in `touched`.
    fn watching(&self) -> bool {
        self.scanning || self.ready.is_some()
    }

    /// A change of `schedule_id` is being proposed: the occurrences of it in
    /// the proposal that is out (their `id_key`s), to hold back from firing.
    pub fn changing(&mut self, schedule_id: &str) -> Vec<Vec<u8>> {
        *self.changing.entry(schedule_id.to_string()).or_default() += 1;
        if self.watching() {
            self.touched.insert(schedule_id.to_string());
        }
        self.out
            .as_ref()
            .and_then(|out| out.get(schedule_id).cloned())
            .unwrap_or_default()
    }

    /// A change of `schedule_id` applied (or failed) at `now`; `next_ts` is
    /// where it put the schedule (0: inactive). Only one that comes due
    /// within the window a scan takes asks for a scan now; a later one is
    /// woken for (creating many schedules must not scan once per create).
    pub fn changed(&mut self, schedule_id: &str, next_ts: i64, now: i64) {
        self.ahead.add(next_ts);
        if next_ts > 0 {
            self.floor = self.floor.min(next_ts);
            self.earliest = Some(self.earliest.map_or(next_ts, |e| e.min(next_ts)));
            if self.scanning {
                self.lowered = Some(self.lowered.unwrap_or(i64::MAX).min(next_ts));
            }
            if next_ts <= now + LOOKAHEAD_MS + GATHER_MS {
                self.rescan = true;
            }
        }
        if self.watching() {
            self.touched.insert(schedule_id.to_string());
        }
        if let Some(n) = self.changing.get_mut(schedule_id) {
            *n -= 1;
            if *n == 0 {
                self.changing.remove(schedule_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(schedule_id: &str, next_ts: i64) -> Plan {
        Plan {
            schedule_id: schedule_id.to_string(),
            events: vec![Event::default()],
            ids: vec![schedule_id.as_bytes().to_vec()],
            advance: ScheduleAdvance {
                schedule_id: schedule_id.to_string(),
                next_ts,
                ..Default::default()
            },
        }
    }

    fn planned(plans: Vec<Plan>, floor: i64) -> Planned {
        Planned {
            plans,
            floor,
            beyond: None,
            full: false,
            backlog: false,
            until: 0,
        }
    }

    /// The schedules the occurrences to propose move on.
    fn advanced(taken: &Occurrences) -> Vec<&str> {
        taken
            .advances
            .iter()
            .map(|a| a.schedule_id.as_str())
            .collect()
    }

    /// A term's `Recurring` with its first scan running.
    fn scanning() -> (tempfile::TempDir, Store, Recurring) {
        let (tmp, store) = store();
        let mut r = Recurring::new(0);
        r.start_scan(&store, 10_000).expect("a first scan is due");
        (tmp, store, r)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), &Default::default()).unwrap();
        (tmp, store)
    }

    #[test]
    fn a_plan_of_a_schedule_changed_while_its_scan_ran_is_dropped() {
        let (_tmp, store) = store();
        let mut r = Recurring::new(0);
        let scan = r.start_scan(&store, 10_000).expect("a first scan is due");
        assert!(r.start_scan(&store, 10_000).is_none(), "one scan at a time");
        // Changed and applied during the scan ("a"), proposed and still in
        // flight ("b"): what the scan read of them may be stale.
        assert!(r.changing("a").is_empty());
        r.changed("a", 11_000, 10_000);
        r.changing("b");
        r.scanned(Ok(planned(
            vec![plan("a", 20_000), plan("b", 20_000), plan("c", 40_000)],
            scan.floor.max(11_000),
        )))
        .unwrap();
        let taken = r.take_ready().expect("c is kept");
        assert_eq!(advanced(&taken), ["c"]);
        assert_eq!(taken.events.len(), 1);
        // Out now: a change of c holds back the occurrence being stored.
        assert_eq!(r.changing("c"), vec![b"c".to_vec()]);
        assert!(r.rescan, "a is due within the window: read again");
        assert!(
            r.start_scan(&store, 10_000).is_none(),
            "not while a proposal is out"
        );
        r.stored(0);
        assert!(r.start_scan(&store, 10_000).is_some());
    }

    #[test]
    fn a_change_applied_during_a_scan_keeps_the_floor_below_its_schedule() {
        let (_tmp, store, mut r) = scanning();
        r.changing("a");
        // Resumed to an occurrence before where the scan got to.
        r.changed("a", 12_000, 10_000);
        r.scanned(Ok(planned(vec![plan("b", 20_000)], 15_000)))
            .unwrap();
        assert_eq!(r.floor, 12_000);
        r.take_ready().unwrap();
        r.stored(0);
        // Without a change, the next scan starts where this one got to.
        r.start_scan(&store, 10_000).unwrap();
        r.scanned(Ok(planned(Vec::new(), 16_000))).unwrap();
        assert_eq!(r.floor, 16_000);
        assert!(
            r.take_ready().is_none(),
            "nothing planned, nothing to propose"
        );
    }

    #[test]
    fn only_a_change_due_within_the_window_asks_for_a_scan_now() {
        let (_tmp, store, mut r) = scanning();
        r.scanned(Ok(planned(Vec::new(), 10_000))).unwrap();
        assert_eq!(r.next_wake_ms(10_000), i64::MAX, "nothing is due");
        // Created with its first occurrence a minute ahead: woken for then.
        r.changing("far");
        r.changed("far", 70_000, 10_000);
        assert!(r.start_scan(&store, 10_000).is_none());
        assert_eq!(r.next_wake_ms(10_000), 70_000 - LOOKAHEAD_MS);
        // Paused or deleted: nothing to scan for.
        r.changing("gone");
        r.changed("gone", 0, 10_000);
        assert!(r.start_scan(&store, 10_000).is_none());
        // Due within the window a scan takes: scanned at once.
        r.changing("near");
        r.changed("near", 10_000 + LOOKAHEAD_MS, 10_000);
        assert!(r.start_scan(&store, 10_000).is_some());
    }

    #[test]
    fn a_plan_waiting_to_be_proposed_is_dropped_when_its_schedule_changes() {
        let (_tmp, _store, mut r) = scanning();
        r.scanned(Ok(planned(
            vec![plan("a", 20_000), plan("b", 20_000), plan("c", 20_000)],
            11_000,
        )))
        .unwrap();
        // Between the scan's end and its proposal: a change proposed (a
        // delete, say) and one proposed and applied.
        r.changing("a");
        r.changing("b");
        r.changed("b", 30_000, 10_000);
        let taken = r.take_ready().expect("c is kept");
        assert_eq!(advanced(&taken), ["c"]);
        // Once proposed, changes are held back by the proposal out instead.
        r.stored(0);
        r.changed("a", 0, 10_000);
        assert!(r.touched.is_empty(), "no scan's plans are out");
    }
}
