//! Per-principal limits: publish rates (events and payload bytes per second)
//! and concurrent Subscribe streams.
//!
//! **Nothing under quota is refused and nothing over it is dropped**: a
//! request is either admitted whole or refused with the time after which it
//! will be admitted. Each rate is a token bucket holding at most one second
//! of it; a request is admitted while the bucket is not in debt, and then
//! its whole cost is taken, possibly into debt. So a batch bigger than a
//! second's worth is admitted once and the principal then waits the debt
//! off: no batch is ever permanently unpublishable, and over time no
//! principal gets more than its rate plus one second's burst.
//!
//! The limits come with the [`Principal`] on every call, so a reload that
//! changes them takes effect at once; the usage (bucket levels, open
//! streams) is kept here by principal name and survives reloads.
//!
//! Time is passed in (`now`), never read here, so tests drive it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::roles::Principal;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// How long a refused stream is told to wait: a slot frees when another of
/// the principal's streams ends, which nothing here can foresee.
pub const STREAM_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A refusal: which limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct OverQuota {
    /// The quota's field name: `publish_events_per_sec`,
    /// `publish_bytes_per_sec` or `max_streams`.
    pub what: &'static str,
    pub retry_after: Duration,
}

impl fmt::Display for OverQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "over quota {}: retry after {} ms",
            self.what,
            self.retry_after.as_millis()
        )
    }
}

/// Every principal's usage. One per node; shared by all requests.
#[derive(Debug, Default)]
pub struct Quotas {
    by_principal: Mutex<HashMap<String, Arc<Usage>>>,
}

#[derive(Debug, Default)]
struct Usage {
    publish: Mutex<PublishBuckets>,
    streams: Arc<AtomicU32>,
}

#[derive(Debug, Default)]
struct PublishBuckets {
    events: Option<Bucket>,
    bytes: Option<Bucket>,
}

/// A token bucket in exact integer arithmetic: the level is kept in
/// token-nanoseconds, so a rate of `r` per second refills exactly `r` units
/// per elapsed nanosecond and no rounding accumulates.
#[derive(Debug)]
struct Bucket {
    rate_per_sec: u64,
    /// Tokens × 10⁹; negative while in debt; never above `capacity()`.
    level: i128,
    at: Instant,
}

impl Bucket {
    fn full(rate_per_sec: u64, now: Instant) -> Bucket {
        assert!(rate_per_sec > 0, "validation rejects a zero rate");
        let mut b = Bucket {
            rate_per_sec,
            level: 0,
            at: now,
        };
        b.level = b.capacity();
        b
    }

    /// One second of rate.
    fn capacity(&self) -> i128 {
        i128::from(self.rate_per_sec) * NANOS_PER_SEC
    }

    /// Adopts a new rate (after a reload), keeping the level (and any debt)
    /// but no more than the new capacity.
    fn set_rate(&mut self, rate_per_sec: u64) {
        assert!(rate_per_sec > 0, "validation rejects a zero rate");
        self.rate_per_sec = rate_per_sec;
        self.level = self.level.min(self.capacity());
    }

    fn refill(&mut self, now: Instant) {
        // Calls may arrive with slightly older instants from other threads:
        // time never runs backwards here, it just adds nothing.
        if now <= self.at {
            return;
        }
        let elapsed = i128::try_from((now - self.at).as_nanos()).unwrap_or(i128::MAX);
        let gained = elapsed.saturating_mul(i128::from(self.rate_per_sec));
        self.level = self.level.saturating_add(gained).min(self.capacity());
        self.at = now;
    }

    /// `None` when not in debt (a request may go), else how long until the
    /// debt is paid (rounded up, so waiting that long is always enough).
    fn wait(&self) -> Option<Duration> {
        if self.level >= 0 {
            return None;
        }
        let rate = i128::from(self.rate_per_sec);
        let nanos = (-self.level + rate - 1) / rate;
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    fn take(&mut self, cost: u64) {
        debug_assert!(self.level >= 0, "took from a bucket in debt");
        self.level -= i128::from(cost) * NANOS_PER_SEC;
        debug_assert!(self.level <= self.capacity());
    }
}

/// Refills the bucket for `rate` (creating or re-rating it as needed) and
/// says how long it is in debt; `None` rate = unlimited, bucket dropped.
fn prepare(slot: &mut Option<Bucket>, rate: Option<u64>, now: Instant) -> Option<Duration> {
    let Some(rate) = rate else {
        *slot = None;
        return None;
    };
    let bucket = slot.get_or_insert_with(|| Bucket::full(rate, now));
    if bucket.rate_per_sec != rate {
        bucket.set_rate(rate);
    }
    bucket.refill(now);
    bucket.wait()
}

impl Quotas {
    fn usage(&self, principal: &Principal) -> Arc<Usage> {
        self.by_principal
            .lock()
            .entry(principal.name.clone())
            .or_default()
            .clone()
    }

    /// Charges a publish of `events` events and `bytes` payload bytes: all of
    /// it admitted, or none (with the wait of the limit that refused).
    pub fn charge_publish(
        &self,
        principal: &Principal,
        events: u64,
        bytes: u64,
        now: Instant,
    ) -> Result<(), OverQuota> {
        let q = &principal.quota;
        if q.publish_events_per_sec.is_none() && q.publish_bytes_per_sec.is_none() {
            return Ok(());
        }
        let usage = self.usage(principal);
        let mut buckets = usage.publish.lock();
        let b = &mut *buckets;
        let waits = [
            (
                "publish_events_per_sec",
                prepare(&mut b.events, q.publish_events_per_sec, now),
            ),
            (
                "publish_bytes_per_sec",
                prepare(&mut b.bytes, q.publish_bytes_per_sec, now),
            ),
        ];
        let longest = waits
            .into_iter()
            .filter_map(|(what, wait)| wait.map(|w| (what, w)))
            .max_by_key(|&(_, w)| w);
        if let Some((what, retry_after)) = longest {
            return Err(OverQuota { what, retry_after });
        }
        if let Some(bucket) = &mut b.events {
            bucket.take(events);
        }
        if let Some(bucket) = &mut b.bytes {
            bucket.take(bytes);
        }
        Ok(())
    }

    /// Takes one of the principal's concurrent streams until the guard drops.
    /// Streams are counted even without a limit, so that a limit added by a
    /// reload counts the streams already open.
    pub fn open_stream(&self, principal: &Principal) -> Result<StreamGuard, OverQuota> {
        let count = self.usage(principal).streams.clone();
        let max = principal.quota.max_streams.unwrap_or(u32::MAX);
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                if n < max {
                    n.checked_add(1)
                } else {
                    None
                }
            })
            .map_err(|_| OverQuota {
                what: "max_streams",
                retry_after: STREAM_RETRY_AFTER,
            })?;
        Ok(StreamGuard { count })
    }

    /// How many streams the principal named `name` has open.
    pub fn open_streams(&self, name: &str) -> u32 {
        self.by_principal
            .lock()
            .get(name)
            .map_or(0, |u| u.streams.load(Ordering::Acquire))
    }
}

/// One open stream of a principal; gives the slot back when dropped.
#[derive(Debug)]
pub struct StreamGuard {
    count: Arc<AtomicU32>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let before = self.count.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "stream count went below zero");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuotaConfig;

    fn principal(events: Option<u64>, bytes: Option<u64>, streams: Option<u32>) -> Principal {
        Principal {
            name: "p".into(),
            grants: Vec::new(),
            quota: QuotaConfig {
                publish_events_per_sec: events,
                publish_bytes_per_sec: bytes,
                max_streams: streams,
            },
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unlimited_principals_are_never_refused() {
        let (q, p, t0) = (
            Quotas::default(),
            principal(None, None, None),
            Instant::now(),
        );
        for _ in 0..1000 {
            assert!(q.charge_publish(&p, u64::MAX, u64::MAX, t0).is_ok());
        }
    }

    #[test]
    fn under_rate_traffic_is_never_refused() {
        // 1000 events/s allowed: a second's worth at once, then 990/s in
        // batches of 1..=30 right after it, with the bucket empty.
        let (q, p, t0) = (
            Quotas::default(),
            principal(Some(1000), None, None),
            Instant::now(),
        );
        assert!(q.charge_publish(&p, 1000, 0, t0).is_ok());
        let mut sent_at_ns = 0u64;
        for i in 0..20_000u64 {
            let batch = 1 + i % 30;
            sent_at_ns += batch * 1_000_000_000 / 990;
            let now = t0 + Duration::from_nanos(sent_at_ns);
            assert_eq!(q.charge_publish(&p, batch, 0, now), Ok(()), "batch {i}");
        }
    }

    #[test]
    fn sustained_over_rate_traffic_gets_the_rate() {
        // 100 events/s allowed, offered 1000/s for 100 s, one event per ms.
        let (q, p, t0) = (
            Quotas::default(),
            principal(Some(100), None, None),
            Instant::now(),
        );
        let mut admitted = 0u64;
        for i in 0..100_000u64 {
            if q.charge_publish(&p, 1, 0, t0 + ms(i)).is_ok() {
                admitted += 1;
            }
        }
        let expected = 100.0 * 100.0 + 100.0; // the rate, plus the initial burst
        let error = (admitted as f64 - expected).abs() / expected;
        assert!(
            error < 0.01,
            "admitted {admitted}, expected about {expected}"
        );
    }

    #[test]
    fn a_client_that_honours_retry_after_gets_the_rate_with_big_batches() {
        // Batches of 5 s worth of bytes: each admitted once the debt is paid.
        let (q, p, t0) = (
            Quotas::default(),
            principal(None, Some(1_000), None),
            Instant::now(),
        );
        let (mut now, mut published) = (t0, 0u64);
        while now < t0 + Duration::from_secs(600) {
            match q.charge_publish(&p, 1, 5_000, now) {
                Ok(()) => published += 5_000,
                Err(over) => now += over.retry_after,
            }
        }
        let rate = published as f64 / 600.0;
        assert!((rate - 1_000.0).abs() / 1_000.0 < 0.01, "rate {rate}");
    }

    #[test]
    fn retry_after_is_exact() {
        let (q, p, t0) = (
            Quotas::default(),
            principal(Some(10), None, None),
            Instant::now(),
        );
        // 30 events against 10/s: admitted, leaving 2 s of debt.
        assert!(q.charge_publish(&p, 30, 0, t0).is_ok());
        let over = q.charge_publish(&p, 1, 0, t0).unwrap_err();
        assert_eq!(over.what, "publish_events_per_sec");
        assert_eq!(over.retry_after, Duration::from_secs(2));
        let early = t0 + over.retry_after - Duration::from_nanos(1);
        let later = q.charge_publish(&p, 1, 0, early).unwrap_err();
        assert_eq!(later.retry_after, Duration::from_nanos(1));
        assert!(q.charge_publish(&p, 1, 0, t0 + over.retry_after).is_ok());
    }

    #[test]
    fn the_limit_with_the_longest_wait_is_reported_and_nothing_is_taken() {
        let (q, p, t0) = (
            Quotas::default(),
            principal(Some(10), Some(100), None),
            Instant::now(),
        );
        assert!(q.charge_publish(&p, 5, 400, t0).is_ok()); // bytes 3 s in debt
        let over = q.charge_publish(&p, 1, 1, t0 + ms(500)).unwrap_err();
        assert_eq!(over.what, "publish_bytes_per_sec");
        assert_eq!(over.retry_after, ms(2500));
        // The refusal cost nothing: events still has its 5 + 5 tokens.
        assert!(q
            .charge_publish(&p, 10, 0, t0 + Duration::from_secs(3))
            .is_ok());
    }

    #[test]
    fn a_reload_that_changes_the_rate_applies_at_once() {
        let q = Quotas::default();
        let t0 = Instant::now();
        assert!(q
            .charge_publish(&principal(Some(1000), None, None), 1000, 0, t0)
            .is_ok());
        // Now 10/s: the bucket is empty, not in debt, so one more goes, and
        // then it refills at the new rate.
        let slow = principal(Some(10), None, None);
        assert!(q.charge_publish(&slow, 20, 0, t0).is_ok());
        let over = q.charge_publish(&slow, 1, 0, t0).unwrap_err();
        assert_eq!(over.retry_after, Duration::from_secs(2));
        // Limit removed: unlimited again.
        assert!(q
            .charge_publish(&principal(None, None, None), 1, 0, t0)
            .is_ok());
    }

    #[test]
    fn instants_out_of_order_do_not_refill() {
        let (q, p, t0) = (
            Quotas::default(),
            principal(Some(10), None, None),
            Instant::now(),
        );
        let t1 = t0 + Duration::from_secs(1);
        assert!(q.charge_publish(&p, 20, 0, t1).is_ok());
        assert_eq!(
            q.charge_publish(&p, 1, 0, t0).unwrap_err().retry_after,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn streams_are_limited_and_released_on_drop() {
        let (q, p) = (Quotas::default(), principal(None, None, Some(2)));
        let a = q.open_stream(&p).unwrap();
        let b = q.open_stream(&p).unwrap();
        let over = q.open_stream(&p).unwrap_err();
        assert_eq!(
            (over.what, over.retry_after),
            ("max_streams", STREAM_RETRY_AFTER)
        );
        assert_eq!(q.open_streams("p"), 2);
        drop(a);
        let c = q.open_stream(&p).unwrap();
        drop((b, c));
        assert_eq!(q.open_streams("p"), 0);
    }

    #[test]
    fn streams_opened_without_a_limit_count_against_a_later_one() {
        let q = Quotas::default();
        let guards: Vec<_> = (0..3)
            .map(|_| q.open_stream(&principal(None, None, None)).unwrap())
            .collect();
        assert!(q.open_stream(&principal(None, None, Some(3))).is_err());
        drop(guards);
        assert!(q.open_stream(&principal(None, None, Some(3))).is_ok());
    }

    #[test]
    fn streams_from_many_threads_never_exceed_the_limit() {
        let (q, p) = (Arc::new(Quotas::default()), principal(None, None, Some(4)));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        if let Ok(g) = q.open_stream(&p) {
                            assert!(q.open_streams("p") <= 4);
                            drop(g);
                        }
                    }
                });
            }
        });
        assert_eq!(q.open_streams("p"), 0);
    }
}
