//! The leader's in-memory view of one consumer group in one partition: where
//! its first deliveries stand, which events are in flight (to which member,
//! which attempt, until when), which wait to be redelivered, and its members.
//! Every change is also recorded as a [`GroupItem`] for the next
//! `DeliveryCommand`, so the state machine holds the same thing durably.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use chronos_proto::internal::{group_item, Attempt, Dead, GroupDelta, GroupItem};

/// One event of the group that is not done: delivered and awaiting its ack,
/// or waiting to be redelivered.
#[derive(Debug, Clone)]
pub struct Flight {
    /// Deliveries so far.
    pub attempt: u32,
    /// Delivered: the ack deadline. Waiting: when to redeliver.
    pub at_ts: i64,
    /// The member holding it (and its credit), when delivered in this term.
    pub member: Option<u64>,
    pub delivered: bool,
    /// The delta that holds its first record (`GroupRt::delta`; 0: restored
    /// from the state machine). Until that delta is taken, its records wait
    /// in `items`, and an ack drops them instead of recording a delete of
    /// what was never written.
    first_delta: u64,
}

#[derive(Debug)]
pub struct GroupRt {
    pub topic: String,
    pub name: String,
    /// The next fire sequence number to read for a first delivery.
    pub cursor: u64,
    /// The cursor as last recorded in a delta.
    recorded_cursor: u64,
    pub from_due_ts: i64,
    pub flights: FxHashMap<u64, Flight>,
    /// (at_ts, seq) of every flight: ack deadlines and redelivery times.
    timers: BTreeSet<(i64, u64)>,
    /// Waiting events whose redelivery time has come, by fire sequence.
    pub ready: BTreeSet<u64>,
    pub members: Vec<u64>,
    /// Round-robin position among members.
    pub next_member: usize,
    /// Changes not yet proposed.
    items: Vec<GroupItem>,
    /// Events acked before any record of them was proposed: their items are
    /// dropped from the next delta (the cursor past them is all it needs).
    settled: FxHashSet<u64>,
    /// The number of the delta being gathered (deltas taken so far, plus 1).
    delta: u64,
}

/// What the timers of a group decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// (member, credits) to give back: their deliveries timed out.
    pub credits: Vec<u64>,
    pub retried: u64,
    pub dead: u64,
}

impl GroupRt {
    pub fn new(topic: String, name: String, cursor: u64, from_due_ts: i64) -> GroupRt {
        GroupRt {
            topic,
            name,
            cursor,
            recorded_cursor: cursor,
            from_due_ts,
            flights: FxHashMap::default(),
            timers: BTreeSet::new(),
            ready: BTreeSet::new(),
            members: Vec::new(),
            next_member: 0,
            items: Vec::new(),
            settled: FxHashSet::default(),
            delta: 1,
        }
    }

    /// Restores a flight found in the state machine at the start of a term.
    /// Deliveries made in an earlier term have no member any more: they are
    /// redelivered now. Waiting ones keep their redelivery time.
    pub fn restore(&mut self, seq: u64, attempt: u32, at_ts: i64, delivered: bool) {
        let flight = Flight {
            attempt,
            at_ts,
            member: None,
            delivered: false,
            first_delta: 0,
        };
        if delivered {
            self.ready.insert(seq);
        } else {
            self.timers.insert((at_ts, seq));
        }
        self.flights.insert(seq, flight);
    }

    pub fn next_timer(&self) -> Option<i64> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Records a delivery of `seq` to `member` (attempt `attempt`).
    pub fn delivered(&mut self, seq: u64, attempt: u32, deadline: i64, member: u64) {
        let mut first_delta = self.delta;
        if let Some(old) = self.flights.get(&seq) {
            self.timers.remove(&(old.at_ts, seq));
            first_delta = old.first_delta;
        }
        self.ready.remove(&seq);
        self.flights.insert(
            seq,
            Flight {
                attempt,
                at_ts: deadline,
                member: Some(member),
                delivered: true,
                first_delta,
            },
        );
        self.timers.insert((deadline, seq));
        self.record(
            seq,
            group_item::Op::Delivered(Attempt {
                attempt,
                at_ts: deadline,
            }),
        );
    }

    /// Takes `seq` out of flight (acked or dead); returns the member whose
    /// credit it held, if any.
    fn remove(&mut self, seq: u64) -> Option<Flight> {
        let flight = self.flights.remove(&seq)?;
        self.timers.remove(&(flight.at_ts, seq));
        self.ready.remove(&seq);
        Some(flight)
    }

    /// An ack. Returns None when `seq` is not in flight; otherwise the member
    /// whose credit comes back (if it still holds it).
    pub fn ack(&mut self, seq: u64) -> Option<Option<u64>> {
        let flight = self.remove(seq)?;
        if flight.first_delta < self.delta {
            self.record(seq, group_item::Op::Acked(true));
        } else {
            self.settled.insert(seq);
        }
        Some(flight.member.filter(|_| flight.delivered))
    }

    /// Redeliver `seq` at `at_ts`, or give up on it when `dead` says so. The
    /// member whose credit it held (if any) is returned.
    pub fn fail(&mut self, seq: u64, at_ts: i64, dead: Option<String>) -> Option<u64> {
        let flight = self.flights.get_mut(&seq)?;
        let holder = flight.member.take().filter(|_| flight.delivered);
        let attempt = flight.attempt;
        if let Some(reason) = dead {
            self.remove(seq);
            self.record(
                seq,
                group_item::Op::Dead(Dead {
                    attempts: attempt,
                    reason,
                }),
            );
            return holder;
        }
        let old_at = flight.at_ts;
        flight.at_ts = at_ts;
        flight.delivered = false;
        self.timers.remove(&(old_at, seq));
        self.timers.insert((at_ts, seq));
        self.record(seq, group_item::Op::Retry(Attempt { attempt, at_ts }));
        holder
    }

    /// Deliveries held by `member` (which left) become ready for redelivery
    /// now, or dead once they had `max_attempts`: leaving without an ack ends
    /// an attempt, so an event that crashes every consumer it reaches does
    /// not go round the group for ever. A member that `keeps` its unacked
    /// deliveries leaves them in flight until their ack deadline (acks by id
    /// still count). Returns how many died.
    pub fn release_member(&mut self, member: u64, max_attempts: u32, keeps: bool) -> u64 {
        self.members.retain(|&m| m != member);
        if keeps {
            return 0;
        }
        let held: Vec<(u64, u32)> = self
            .flights
            .iter()
            .filter(|(_, f)| f.delivered && f.member == Some(member))
            .map(|(&seq, f)| (seq, f.attempt))
            .collect();
        let mut dead = 0;
        for (seq, attempt) in held {
            if attempt >= max_attempts {
                let reason = format!("its member left without an ack, after {attempt} attempts");
                self.fail(seq, 0, Some(reason));
                dead += 1;
            } else if let Some(f) = self.flights.get_mut(&seq) {
                self.timers.remove(&(f.at_ts, seq));
                f.member = None;
                f.delivered = false;
                self.ready.insert(seq);
            }
        }
        dead
    }

    /// Timers due at `now`: waiting events become ready; deliveries past their
    /// deadline are retried after `backoff(attempt)`, or dead after `max_attempts`.
    pub fn expire(
        &mut self,
        now: i64,
        max_attempts: u32,
        mut backoff: impl FnMut(u32) -> i64,
    ) -> Expired {
        let mut out = Expired::default();
        while let Some(&(at, seq)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(flight) = self.flights.get(&seq) else {
                continue;
            };
            if !flight.delivered {
                self.ready.insert(seq);
                continue;
            }
            let attempt = flight.attempt;
            let dead = (attempt >= max_attempts)
                .then(|| format!("no ack within the ack timeout after {attempt} attempts"));
            let is_dead = dead.is_some();
            // `fail` looks the timer up by the flight's at_ts; it was popped already.
            if let Some(m) = self.fail(seq, now + backoff(attempt), dead) {
                out.credits.push(m);
            }
            if is_dead {
                out.dead += 1;
            } else {
                out.retried += 1;
            }
        }
        out
    }

    /// Moves the cursor past events read for a first delivery.
    pub fn advance(&mut self, cursor: u64) {
        self.cursor = self.cursor.max(cursor);
    }

    /// Nothing to do until a member joins: no members, nothing in flight
    /// or waiting, nothing to record.
    pub fn idle(&self) -> bool {
        self.members.is_empty()
            && self.flights.is_empty()
            && self.ready.is_empty()
            && self.pending_changes() == 0
    }

    /// How many changes wait for the next delta.
    pub fn pending_changes(&self) -> usize {
        self.items.len() + usize::from(self.cursor != self.recorded_cursor)
    }

    /// The group's changes since the last call, as a delta (None if none).
    pub fn take_delta(&mut self) -> Option<GroupDelta> {
        if self.items.is_empty() && self.cursor == self.recorded_cursor {
            return None;
        }
        self.recorded_cursor = self.cursor;
        let mut items = std::mem::take(&mut self.items);
        if !self.settled.is_empty() {
            items.retain(|item| !self.settled.contains(&item.seq));
            self.settled.clear();
        }
        self.delta += 1;
        Some(GroupDelta {
            topic: self.topic.clone(),
            group: self.name.clone(),
            cursor: self.cursor,
            items,
        })
    }

    /// A first delivery of `seq` that could not be sent (the member's stream
    /// had ended): it waits, recorded, to be delivered to another member.
    pub fn requeue(&mut self, seq: u64, now: i64) {
        let first_delta = self.flights.get(&seq).map_or(self.delta, |f| f.first_delta);
        self.flights.insert(
            seq,
            Flight {
                attempt: 0,
                at_ts: now,
                member: None,
                delivered: false,
                first_delta,
            },
        );
        self.ready.insert(seq);
        self.record(
            seq,
            group_item::Op::Retry(Attempt {
                attempt: 0,
                at_ts: now,
            }),
        );
    }

    /// Moves the group (a seek): first deliveries restart at `cursor`.
    pub fn reset(&mut self, cursor: u64, from_due_ts: i64) {
        self.cursor = cursor;
        self.recorded_cursor = cursor;
        self.from_due_ts = from_due_ts;
    }

    fn record(&mut self, seq: u64, op: group_item::Op) {
        self.items.push(GroupItem { seq, op: Some(op) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> GroupRt {
        GroupRt::new("t".into(), "g".into(), 0, 0)
    }

    fn acked(seq: u64) -> GroupItem {
        GroupItem {
            seq,
            op: Some(group_item::Op::Acked(true)),
        }
    }

    #[test]
    fn ack_returns_the_holders_credit_once() {
        let mut g = group();
        g.delivered(5, 1, 100, 7);
        assert_eq!(g.ack(5), Some(Some(7)));
        assert_eq!(g.ack(5), None, "a second ack finds nothing");
        assert!(g.flights.is_empty());
        assert_eq!(g.next_timer(), None);
    }

    #[test]
    fn timeout_retries_with_backoff_then_dies_after_max_attempts() {
        let mut g = group();
        g.delivered(1, 1, 100, 7);
        let e = g.expire(99, 2, |_| 50);
        assert_eq!(e, Expired::default(), "nothing before the deadline");
        let e = g.expire(100, 2, |_| 50);
        assert_eq!((e.retried, e.dead, e.credits), (1, 0, vec![7]));
        assert!(g.ready.is_empty(), "waits for its backoff");
        assert_eq!(g.next_timer(), Some(150));
        g.expire(150, 2, |_| 50);
        assert!(g.ready.contains(&1));
        g.delivered(1, 2, 300, 8);
        let e = g.expire(300, 2, |_| 50);
        assert_eq!((e.retried, e.dead, e.credits), (0, 1, vec![8]));
        assert!(g.flights.is_empty());
        let delta = g.take_delta().expect("changes recorded");
        let ops: Vec<_> = delta.items.iter().map(|i| i.op.clone().unwrap()).collect();
        assert!(matches!(ops.last(), Some(group_item::Op::Dead(d)) if d.attempts == 2));
    }

    #[test]
    fn a_leaving_member_frees_its_deliveries_now() {
        let mut g = group();
        g.members = vec![7, 8];
        g.delivered(1, 1, 100, 7);
        g.delivered(2, 1, 100, 8);
        assert_eq!(g.release_member(7, 5, false), 0);
        assert_eq!(g.members, vec![8]);
        assert_eq!(g.ready.iter().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(g.next_timer(), Some(100), "member 8's deadline stays");
    }

    #[test]
    fn a_member_that_keeps_leaves_its_deliveries_to_their_deadline() {
        let mut g = group();
        g.members = vec![7, 8];
        g.delivered(1, 1, 100, 7);
        assert_eq!(
            g.release_member(7, 1, true),
            0,
            "a last attempt is not dead yet"
        );
        assert_eq!(g.members, vec![8]);
        assert!(g.ready.is_empty(), "nothing goes back at once");
        assert_eq!(g.ack(1), Some(Some(7)), "an ack by id still settles it");
        g.delivered(2, 1, 100, 8);
        g.release_member(8, 5, true);
        let e = g.expire(100, 5, |_| 50);
        assert_eq!(
            (e.retried, e.credits),
            (1, vec![8]),
            "retried at its deadline"
        );
    }

    #[test]
    fn a_member_leaving_with_a_last_attempt_makes_it_dead() {
        let mut g = group();
        g.members = vec![7];
        g.delivered(1, 2, 100, 7);
        g.delivered(2, 1, 100, 7);
        assert_eq!(g.release_member(7, 2, false), 1);
        assert_eq!(g.ready.iter().copied().collect::<Vec<_>>(), vec![2]);
        assert!(!g.flights.contains_key(&1));
        assert_eq!(g.next_timer(), None, "no timer is left for either");
        let delta = g.take_delta().expect("changes recorded");
        let dead: Vec<_> = delta
            .items
            .iter()
            .filter_map(|i| match i.op.clone().unwrap() {
                group_item::Op::Dead(d) => Some((i.seq, d.attempts)),
                _ => None,
            })
            .collect();
        assert_eq!(dead, vec![(1, 2)]);
    }

    #[test]
    fn restored_deliveries_are_ready_and_waiting_ones_keep_their_time() {
        let mut g = group();
        g.restore(1, 1, 500, true);
        g.restore(2, 2, 700, false);
        assert!(g.ready.contains(&1));
        assert_eq!(g.next_timer(), Some(700));
        assert_eq!(g.take_delta(), None, "restoring records nothing");
    }

    #[test]
    fn a_first_delivery_that_could_not_be_sent_waits_recorded() {
        let mut g = group();
        g.advance(4);
        g.requeue(3, 50);
        assert!(g.ready.contains(&3));
        assert_eq!(g.flights[&3].attempt, 0, "the next delivery is attempt 1");
        let delta = g.take_delta().unwrap();
        assert_eq!(delta.cursor, 4);
        assert!(matches!(
            delta.items[0].op,
            Some(group_item::Op::Retry(Attempt {
                attempt: 0,
                at_ts: 50
            }))
        ));
    }

    #[test]
    fn an_ack_before_its_delivery_is_proposed_records_neither() {
        let mut g = group();
        g.advance(3);
        g.delivered(1, 1, 100, 7);
        g.delivered(2, 1, 100, 7);
        assert_eq!(g.ack(1), Some(Some(7)));
        let delta = g.take_delta().unwrap();
        assert_eq!(
            delta.cursor, 3,
            "the cursor past it is what makes the ack durable"
        );
        let seqs: Vec<u64> = delta.items.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, vec![2], "nothing recorded of the acked event");
        // Event 2's delivery was proposed: its ack must delete the record.
        assert_eq!(g.ack(2), Some(Some(7)));
        let delta = g.take_delta().unwrap();
        assert_eq!(delta.items, vec![acked(2)]);
    }

    #[test]
    fn an_ack_of_a_restored_or_requeued_record_deletes_it() {
        let mut g = group();
        g.restore(4, 1, 500, true);
        g.delivered(4, 2, 900, 7);
        assert_eq!(g.ack(4), Some(Some(7)));
        let delta = g.take_delta().unwrap();
        assert_eq!(delta.items.last(), Some(&acked(4)));
        // Requeued, proposed, then delivered and acked: the retry record goes.
        g.requeue(5, 50);
        assert!(g.take_delta().is_some());
        g.delivered(5, 1, 900, 7);
        g.ack(5);
        let delta = g.take_delta().unwrap();
        assert_eq!(delta.items.last(), Some(&acked(5)));
    }

    #[test]
    fn cursor_changes_make_a_delta_once() {
        let mut g = group();
        g.advance(10);
        assert_eq!(g.take_delta().map(|d| d.cursor), Some(10));
        assert_eq!(g.take_delta(), None);
        g.advance(5);
        assert_eq!(g.take_delta(), None, "the cursor never moves back");
    }
}
