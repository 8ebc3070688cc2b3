//! A connected consumer: its outbox and its credits, shared by every partition
//! it subscribed to.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use chronos_proto::v1::Delivery;
use tokio::sync::{mpsc, Notify};

/// What a member's stream receives.
#[derive(Debug)]
pub enum Outgoing {
    Delivery(Delivery),
    /// The partition can no longer serve this member (it stopped leading or
    /// is shutting down); the stream should end with this reason.
    Closed(String),
}

static NEXT_MEMBER_ID: AtomicU64 = AtomicU64::new(1);

/// What a member subscribed with.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// Unacknowledged deliveries it may hold at once.
    pub max_inflight: u32,
    /// What it holds when it leaves stays in flight until its ack deadline
    /// instead of going back at once.
    pub keeps_unacked: bool,
    /// Deliveries it may be handed in all, whatever its credits.
    pub max_deliveries: Option<u64>,
}

impl Terms {
    /// A window of `max_inflight`, nothing else.
    pub fn window(max_inflight: u32) -> Terms {
        Terms {
            max_inflight,
            keeps_unacked: false,
            max_deliveries: None,
        }
    }
}

/// One subscriber of a consumer group. Credits are the number of further
/// deliveries it may hold unacknowledged: taking one per delivery and giving
/// one back per ack (or grant) keeps it at most at its `max_inflight`.
#[derive(Debug)]
pub struct Member {
    id: u64,
    outbox: mpsc::UnboundedSender<Outgoing>,
    credits: AtomicI64,
    /// What it holds when it leaves stays in flight until its ack deadline.
    keeps_unacked: bool,
    /// Deliveries it may still be handed, whatever its credits.
    left: AtomicI64,
    /// The partition owners that stopped delivering to it for want of
    /// credit, woken (once) when credit returns. Only those: a consumer on
    /// 32 partitions acks each delivery, and waking every owner on every
    /// ack made the owners' wakes grow with the square of the partitions.
    starved: parking_lot::Mutex<Vec<Arc<Notify>>>,
}

impl Member {
    /// A member on `terms`, and the receiving end of its outbox. The outbox
    /// is unbounded, but credits bound it.
    pub fn new(terms: Terms) -> (Arc<Member>, mpsc::UnboundedReceiver<Outgoing>) {
        let (outbox, rx) = mpsc::unbounded_channel();
        let member = Member {
            id: NEXT_MEMBER_ID.fetch_add(1, Ordering::Relaxed),
            outbox,
            credits: AtomicI64::new(i64::from(terms.max_inflight)),
            keeps_unacked: terms.keeps_unacked,
            left: AtomicI64::new(
                (terms.max_deliveries).map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            ),
            starved: parking_lot::Mutex::new(Vec::new()),
        };
        (Arc::new(member), rx)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn keeps_unacked(&self) -> bool {
        self.keeps_unacked
    }

    /// A sender into this member's outbox, for deliveries that reach it from
    /// elsewhere (a partition led by another node, through the gateway).
    pub fn outbox(&self) -> mpsc::UnboundedSender<Outgoing> {
        self.outbox.clone()
    }

    /// Allows `n` more unacknowledged deliveries (a credit grant).
    pub fn grant(&self, n: u32) {
        self.give_back(i64::from(n));
    }

    /// Deliveries it may take right now: its credits, within its limit.
    pub fn credits(&self) -> i64 {
        let left = self.left.load(Ordering::Acquire);
        self.credits.load(Ordering::Acquire).min(left)
    }

    /// Takes one credit (and one of its limit) if there is one.
    pub(crate) fn try_take(&self) -> bool {
        self.take_up_to(1) == 1
    }

    /// Takes up to `n` credits (and as much of its limit); how many it took.
    pub(crate) fn take_up_to(&self, n: u32) -> u32 {
        let n = i64::from(n);
        let take = |c: i64| (c > 0).then(|| c - c.min(n));
        let limited = self.left.load(Ordering::Acquire) != i64::MAX;
        let allowed = match limited {
            // No limit (it never changes): the credit alone decides.
            false => n,
            true => match (self.left).fetch_update(Ordering::AcqRel, Ordering::Acquire, take) {
                Ok(before) => before.min(n),
                Err(_) => return 0,
            },
        };
        let took = match (self.credits).fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (c > 0).then(|| c - c.min(allowed))
        }) {
            Ok(before) => before.min(allowed),
            Err(_) => 0,
        };
        if limited && took < allowed {
            self.left.fetch_add(allowed - took, Ordering::AcqRel);
        }
        u32::try_from(took).expect("took at most n, a u32")
    }

    /// Returns `n` credits taken by [`take_up_to`](Self::take_up_to) and not
    /// used for a delivery, with their share of its limit.
    pub(crate) fn untake(&self, n: u32) {
        if n == 0 {
            return;
        }
        if self.left.load(Ordering::Acquire) != i64::MAX {
            self.left.fetch_add(i64::from(n), Ordering::AcqRel);
        }
        self.give_back(i64::from(n));
    }

    /// Returns credit and wakes the owners waiting for it.
    pub(crate) fn give_back(&self, n: i64) {
        if n <= 0 {
            return;
        }
        self.credits.fetch_add(n, Ordering::AcqRel);
        let starved = std::mem::take(&mut *self.starved.lock());
        for owner in starved {
            owner.notify_one();
        }
    }

    /// Hands a delivery to the stream; false when the stream is gone.
    pub(crate) fn send(&self, delivery: Delivery) -> bool {
        self.outbox.send(Outgoing::Delivery(delivery)).is_ok()
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.outbox.is_closed()
    }

    pub(crate) fn close(&self, reason: String) {
        let _ = self.outbox.send(Outgoing::Closed(reason));
    }

    /// Wakes `owner` when credit next returns. Called after finding none,
    /// so the caller looks again afterwards: credit returned in between
    /// woke nobody.
    pub(crate) fn wait_for_credit(&self, owner: &Arc<Notify>) {
        let mut starved = self.starved.lock();
        if !starved.iter().any(|w| Arc::ptr_eq(w, owner)) {
            starved.push(owner.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_caps_deliveries_whatever_the_credits() {
        let (m, _rx) = Member::new(Terms {
            max_deliveries: Some(2),
            ..Terms::window(5)
        });
        assert_eq!(m.credits(), 2);
        assert!(m.try_take() && m.try_take());
        assert!(!m.try_take(), "the limit is spent");
        m.give_back(2);
        assert_eq!(m.credits(), 0, "credit back does not raise the limit");
        assert!(!m.try_take());
    }

    #[test]
    fn credits_never_go_below_zero_and_come_back() {
        let (m, _rx) = Member::new(Terms::window(2));
        assert!(m.try_take());
        assert!(m.try_take());
        assert!(!m.try_take());
        assert_eq!(m.credits(), 0);
        m.give_back(1);
        assert!(m.try_take());
        m.grant(3);
        assert_eq!(m.credits(), 3);
    }

    #[test]
    fn taking_several_credits_stops_at_the_credits_and_the_limit_and_untaking_restores_both() {
        let (m, _rx) = Member::new(Terms::window(5));
        assert_eq!(m.take_up_to(3), 3);
        assert_eq!(m.take_up_to(3), 2, "only two were left");
        assert_eq!(m.take_up_to(3), 0);
        m.untake(4);
        assert_eq!(m.credits(), 4);
        assert_eq!(m.take_up_to(0), 0);

        let (m, _rx) = Member::new(Terms {
            max_deliveries: Some(3),
            ..Terms::window(5)
        });
        assert_eq!(m.take_up_to(5), 3, "the limit caps it");
        assert_eq!(m.take_up_to(1), 0);
        m.untake(2);
        assert_eq!(m.credits(), 2, "unused credits do not spend the limit");
        assert_eq!(m.take_up_to(5), 2);
        m.give_back(1);
        assert_eq!(
            m.take_up_to(5),
            0,
            "an ack's credit does not raise the limit"
        );
    }

    #[tokio::test]
    async fn returned_credit_wakes_only_the_owners_waiting_for_it_once() {
        let (m, _rx) = Member::new(Terms::window(1));
        let (waiting, idle) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        assert!(m.try_take());
        m.wait_for_credit(&waiting);
        m.wait_for_credit(&waiting);
        m.give_back(1);
        let woke = |n: &Arc<Notify>| {
            let n = n.clone();
            async move {
                tokio::time::timeout(std::time::Duration::from_millis(50), n.notified())
                    .await
                    .is_ok()
            }
        };
        assert!(woke(&waiting).await, "the waiting owner is woken");
        assert!(!woke(&idle).await, "an owner that did not wait is not");
        m.give_back(1);
        assert!(!woke(&waiting).await, "a wake is for one wait only");
    }

    #[test]
    fn member_ids_are_unique() {
        let (a, _ra) = Member::new(Terms::window(1));
        let (b, _rb) = Member::new(Terms::window(1));
        assert_ne!(a.id(), b.id());
    }
}
