//! Handing events to a group's members: its ready redeliveries first, then
//! the next fired events of its topic, to members with credit in turn, each
//! delivery sent and recorded at once.

use std::sync::Arc;

use chronos_proto::internal::{EventRecord, FiredRecord};
use chronos_proto::v1::Delivery;
use prost::Message;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use super::dispatch::READ_BATCH;
use super::group::GroupRt;
use super::{delivery_id, event_of, Member};
use crate::fire_tail::{FireTail, Found};
use crate::owner::{Ctx, TermError};

/// Hands the group's ready redeliveries, then its next fired events, to its
/// members while they have credit.
pub(super) fn pump(
    ctx: &Ctx,
    tail: &FireTail,
    g: &mut GroupRt,
    members: &FxHashMap<u64, Arc<Member>>,
    credit: &Arc<Notify>,
    now: i64,
) -> Result<(), TermError> {
    if g.members.is_empty() {
        return Ok(());
    }
    while let Some(&seq) = g.ready.first() {
        let Some(member) = pick(g, members) else {
            if starved(g, members, credit) {
                return Ok(());
            }
            continue;
        };
        let attempt = g.flights.get(&seq).map_or(0, |f| f.attempt) + 1;
        match tail.get(&ctx.store, &g.topic, seq)? {
            Found::Record(rec) => deliver(ctx, g, &member, seq, rec, attempt, now)?,
            // Trimmed from the fire log: nothing left to deliver.
            Found::Gone => {
                g.ack(seq);
                member.give_back(1);
            }
            // Never delivered yet, so never ready: not expected; later.
            Found::NotYet => {
                member.give_back(1);
                return Ok(());
            }
        }
    }
    loop {
        // Credits first, then exactly that many records: the members'
        // credits are shared with the group's other partitions, whose owners
        // take them meanwhile, and records read for credit gone elsewhere
        // were read for nothing (a third of a burst's reads).
        let want = tail
            .unread(&g.topic, g.cursor)
            .map_or(READ_BATCH, |n| n.min(READ_BATCH as u64) as usize);
        if want == 0 {
            return Ok(());
        }
        let mut grant = Grant::reserve(g, members, want);
        if grant.total == 0 {
            if starved(g, members, credit) {
                return Ok(());
            }
            continue;
        }
        let records = tail.read(&ctx.store, &g.topic, g.cursor, grant.total)?;
        let ended = records.len() < grant.total;
        for (seq, rec) in records {
            let for_us = rec.only_group.is_empty() || rec.only_group == g.name;
            if rec.due_ts < g.from_due_ts || !for_us {
                g.advance(seq + 1);
                continue;
            }
            // At most one delivery per record read, and as many were granted;
            // only a member gone meanwhile leaves fewer.
            let Some(member) = grant.next() else {
                break;
            };
            g.advance(seq + 1);
            deliver(ctx, g, &member, seq, rec, 1, now)?;
        }
        if let Some(i) = grant
            .last
            .and_then(|id| g.members.iter().position(|&m| m == id))
        {
            g.next_member = (i + 1) % g.members.len();
        }
        if ended {
            return Ok(());
        }
    }
}

/// Credits taken from a group's members for one read, handed out in turn;
/// those not used go back when it is dropped (also on an early return).
struct Grant {
    held: Vec<(Arc<Member>, u32)>,
    total: usize,
    turn: usize,
    /// The member handed the last credit.
    last: Option<u64>,
}

impl Grant {
    /// Up to `want` credits: an even share from each member, from the next
    /// in turn, then whatever the others can add.
    fn reserve(g: &GroupRt, members: &FxHashMap<u64, Arc<Member>>, want: usize) -> Grant {
        let n = g.members.len();
        let mut held: Vec<(Arc<Member>, u32)> = (0..n)
            .filter_map(|i| members.get(&g.members[(g.next_member + i) % n]))
            .filter(|m| !m.is_gone())
            .map(|m| (m.clone(), 0))
            .collect();
        let mut left = u32::try_from(want).unwrap_or(u32::MAX);
        if !held.is_empty() {
            let share = left.div_ceil(held.len() as u32);
            for pass_share in [share, u32::MAX] {
                for (m, took) in held.iter_mut() {
                    if left == 0 {
                        break;
                    }
                    let k = m.take_up_to(pass_share.min(left));
                    *took += k;
                    left -= k;
                }
            }
        }
        let total = held.iter().map(|(_, k)| *k as usize).sum();
        Grant {
            held,
            total,
            turn: 0,
            last: None,
        }
    }

    /// The next member in turn with a granted credit, which it uses.
    fn next(&mut self) -> Option<Arc<Member>> {
        for _ in 0..self.held.len() {
            let i = self.turn % self.held.len();
            self.turn += 1;
            let (member, left) = &mut self.held[i];
            if *left > 0 && !member.is_gone() {
                *left -= 1;
                self.last = Some(member.id());
                return Some(member.clone());
            }
        }
        None
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        for (member, left) in &self.held {
            member.untake(*left);
        }
    }
}

/// No member of the group has credit: asks each to wake this owner when
/// some returns. False if some returned meanwhile (look again).
fn starved(g: &GroupRt, members: &FxHashMap<u64, Arc<Member>>, owner: &Arc<Notify>) -> bool {
    let mut back = false;
    for member in g.members.iter().filter_map(|m| members.get(m)) {
        if member.is_gone() {
            continue;
        }
        member.wait_for_credit(owner);
        back |= member.credits() > 0;
    }
    !back
}

/// Sends one delivery (the member holds a credit for it) and records it.
fn deliver(
    ctx: &Ctx,
    g: &mut GroupRt,
    member: &Arc<Member>,
    seq: u64,
    rec: FiredRecord,
    attempt: u32,
    now: i64,
) -> Result<(), TermError> {
    assert!(
        rec.due_ts <= rec.fire_ts,
        "an event is never delivered before it is due"
    );
    let record = EventRecord::decode(rec.event.clone()).map_err(|source| TermError::Decode {
        what: "a fired event",
        source,
    })?;
    let delivery = Delivery {
        delivery_id: delivery_id(ctx.partition, &g.topic, seq, attempt),
        event: Some(event_of(record)),
        partition: ctx.partition,
        offset: rec.offset,
        due_ts: rec.due_ts,
        attempt,
    };
    if !member.send(delivery) {
        // The stream is gone; its Detach follows. Try this event again then.
        member.give_back(1);
        let dead = g.release_member(
            member.id(),
            ctx.delivery.max_attempts,
            member.keeps_unacked(),
        );
        metrics::counter!("chronos_dead_letters_total").increment(dead);
        if g.flights.contains_key(&seq) {
            g.ready.insert(seq);
        } else {
            // A first delivery, past the cursor already: keep it as a
            // (recorded) redelivery rather than read it again.
            g.requeue(seq, now);
        }
        return Ok(());
    }
    g.delivered(
        seq,
        attempt,
        now + ctx.delivery.ack_timeout_ms(),
        member.id(),
    );
    ctx.meters.deliveries.increment(1);
    if attempt == 1 {
        ctx.meters
            .lateness
            .record((now - rec.due_ts).max(0) as f64 / 1000.0);
    } else {
        ctx.meters.redeliveries.increment(1);
    }
    Ok(())
}

/// The next member of the group (round-robin) that has a credit, taking it.
fn pick(g: &mut GroupRt, members: &FxHashMap<u64, Arc<Member>>) -> Option<Arc<Member>> {
    let n = g.members.len();
    for i in 0..n {
        let idx = (g.next_member + i) % n;
        let Some(member) = members.get(&g.members[idx]) else {
            continue;
        };
        if !member.is_gone() && member.try_take() {
            g.next_member = (idx + 1) % n;
            return Some(member.clone());
        }
    }
    None
}
