//! Handing events to a group's members: its ready redeliveries first, then
//! the next fired events of its topic, to members with credit in turn, each
//! delivery sent and recorded at once.

use std::collections::HashMap;
use std::sync::Arc;

use chronos_proto::internal::{EventRecord, FiredRecord};
use chronos_proto::v1::Delivery;
use prost::Message;
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
    members: &HashMap<u64, Arc<Member>>,
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
        let budget: i64 = g
            .members
            .iter()
            .filter_map(|m| members.get(m))
            .map(|m| m.credits().max(0))
            .sum();
        if budget == 0 {
            if starved(g, members, credit) {
                return Ok(());
            }
            continue;
        }
        let limit = (budget as usize).min(READ_BATCH);
        let records = tail.read(&ctx.store, &g.topic, g.cursor, limit)?;
        if records.is_empty() {
            return Ok(());
        }
        for (seq, rec) in records {
            let for_us = rec.only_group.is_empty() || rec.only_group == g.name;
            if rec.due_ts < g.from_due_ts || !for_us {
                g.advance(seq + 1);
                continue;
            }
            let Some(member) = pick(g, members) else {
                if starved(g, members, credit) {
                    return Ok(());
                }
                // Credit came back: read from the cursor again.
                break;
            };
            g.advance(seq + 1);
            deliver(ctx, g, &member, seq, rec, 1, now)?;
        }
    }
}

/// No member of the group has credit: asks each to wake this owner when
/// some returns. False if some returned meanwhile (look again).
fn starved(g: &GroupRt, members: &HashMap<u64, Arc<Member>>, owner: &Arc<Notify>) -> bool {
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
fn pick(g: &mut GroupRt, members: &HashMap<u64, Arc<Member>>) -> Option<Arc<Member>> {
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
