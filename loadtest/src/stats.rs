//! The load generator's arithmetic, kept apart from the I/O so it can be tested
//! alone: latency summaries of HDR histograms, the open-loop [`Pacer`] and
//! coordinated-omission-corrected recording.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Highest latency a histogram resolves, µs (one hour); larger values saturate.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// An empty latency histogram in microseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// p50/p90/p99/p99.9/max of a histogram of microseconds, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(hist: &Histogram<u64>) -> Self {
        let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
        LatencySummary {
            count: hist.len(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: hist.max() as f64 / 1000.0,
        }
    }

    /// `{"p50": …, "p90": …, "p99": …, "p999": …, "max": …}` in ms.
    pub fn to_json(self) -> Value {
        json!({"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms, "p999": self.p999_ms, "max": self.max_ms})
    }

    /// One table cell: `p50 0.123  p90 …  max …` (ms).
    pub fn to_text(self) -> String {
        format!(
            "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// Percentiles a latency curve is read at: p0 … p99.99, denser in the tail,
/// then the maximum (p100). `chronos-loadtest plot` draws these.
pub const CURVE_PERCENTILES: [f64; 20] = [
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9,
    99.95, 99.975, 99.99, 100.0,
];

/// `[[percentile, ms], …]` of a histogram of microseconds at [`CURVE_PERCENTILES`]
/// (empty for an empty histogram).
pub fn curve_json(hist: &Histogram<u64>) -> Value {
    if hist.is_empty() {
        return json!([]);
    }
    let points: Vec<Value> = CURVE_PERCENTILES
        .iter()
        .map(|&p| json!([p, hist.value_at_percentile(p) as f64 / 1000.0]))
        .collect();
    Value::Array(points)
}

/// An open-loop schedule: request `i` is due `i × interval` after the start,
/// whatever happened to the requests before it.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    interval_ns: f64,
}

impl Pacer {
    /// `rate` requests per second; `None` unless it is finite and positive.
    pub fn new(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then(|| Pacer {
            interval_ns: 1e9 / rate,
        })
    }

    /// When request `index` is meant to be sent, as an offset from the start.
    pub fn offset(&self, index: u64) -> Duration {
        Duration::from_nanos((index as f64 * self.interval_ns) as u64)
    }

    /// The gap between consecutive requests.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns as u64)
    }
}

/// Latency corrected for coordinated omission: measured from the moment the
/// request was *meant* to go out, not from when a busy client got round to it,
/// so a stall counts against every request it delayed.
pub fn corrected_latency(intended: Duration, completed: Duration) -> Duration {
    completed.saturating_sub(intended)
}

/// Records `latency` (≥ 1 µs, saturating at the histogram's bound).
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    hist.saturating_record((latency.as_micros() as u64).max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_percentiles_in_ms() {
        let mut hist = latency_histogram();
        for us in 1..=1000u64 {
            hist.record(us * 1000).unwrap();
        }
        let s = LatencySummary::of(&hist);
        assert_eq!(s.count, 1000);
        // 3 significant digits: within 0.1% of the exact value.
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(near(s.p50_ms, 500.0), "{s:?}");
        assert!(near(s.p90_ms, 900.0), "{s:?}");
        assert!(near(s.p99_ms, 990.0), "{s:?}");
        assert!(near(s.p999_ms, 999.0), "{s:?}");
        assert!(near(s.max_ms, 1000.0), "{s:?}");
        let json = s.to_json();
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(json[key].is_f64(), "{key} in {json}");
        }
    }

    #[test]
    fn curve_is_monotonic_and_spans_min_to_max() {
        let mut hist = latency_histogram();
        for us in 1..=10_000u64 {
            hist.record(us).unwrap();
        }
        let curve = curve_json(&hist);
        let points = curve.as_array().unwrap();
        assert_eq!(points.len(), CURVE_PERCENTILES.len());
        let ms: Vec<f64> = points.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(ms.windows(2).all(|w| w[0] <= w[1]), "{ms:?}");
        assert_eq!(ms[0], 0.001);
        assert!((ms[ms.len() - 1] - 10.0).abs() < 0.01, "{ms:?}");
        assert_eq!(curve_json(&latency_histogram()), json!([]));
    }

    #[test]
    fn summary_of_empty_histogram_is_zero() {
        let s = LatencySummary::of(&latency_histogram());
        assert_eq!((s.count, s.p99_ms, s.max_ms), (0, 0.0, 0.0));
    }

    #[test]
    fn record_clamps_to_the_histogram() {
        let mut hist = latency_histogram();
        record(&mut hist, Duration::ZERO);
        record(&mut hist, Duration::from_secs(10 * 3600));
        assert_eq!(hist.len(), 2);
        assert_eq!(hist.min(), 1);
        assert!(hist.max() >= LATENCY_MAX_US * 999 / 1000);
    }

    #[test]
    fn pacer_spaces_requests_evenly_from_the_start() {
        let pacer = Pacer::new(1000.0).unwrap();
        assert_eq!(pacer.offset(0), Duration::ZERO);
        assert_eq!(pacer.offset(1), Duration::from_millis(1));
        assert_eq!(pacer.offset(2500), Duration::from_millis(2500));
        assert_eq!(pacer.interval(), Duration::from_millis(1));
        // A fractional rate does not drift: 3/s → the 300th at exactly 100 s (±1 ns).
        let third = Pacer::new(3.0).unwrap();
        let at = third.offset(300).as_nanos() as i128;
        assert!((at - 100_000_000_000).abs() <= 1, "{at}");
        assert!(Pacer::new(0.0).is_none());
        assert!(Pacer::new(f64::NAN).is_none());
        assert!(Pacer::new(-1.0).is_none());
    }

    /// One client, open loop at 1000/s, the server stalls 100 ms on request 0
    /// then answers in 1 ms. Measured from the actual send, only one request
    /// looks slow (the omission); from the intended send, every request queued
    /// behind the stall counts, as it would for independent users.
    #[test]
    fn correction_charges_the_stall_to_every_delayed_request() {
        let pacer = Pacer::new(1000.0).unwrap();
        let mut naive = latency_histogram();
        let mut corrected = latency_histogram();
        let mut free_at = Duration::ZERO;
        for i in 0..1000u64 {
            let intended = pacer.offset(i);
            let sent = intended.max(free_at);
            let service = if i == 0 {
                Duration::from_millis(100)
            } else {
                Duration::from_micros(500)
            };
            let done = sent + service;
            free_at = done;
            record(&mut naive, done - sent);
            record(&mut corrected, corrected_latency(intended, done));
        }
        let naive = LatencySummary::of(&naive);
        let corrected = LatencySummary::of(&corrected);
        assert!(naive.p90_ms < 1.0, "{naive:?}");
        // ~200 requests were delayed by the stall, their wait shrinking by 0.5 ms each.
        assert!(corrected.p90_ms > 10.0, "{corrected:?}");
        assert!(corrected.max_ms >= 100.0, "{corrected:?}");
        // hdrhistogram's own correction (back-filling the stall at the expected
        // interval: 99, 98, … 1 ms) agrees on the shape.
        let mut hdr = latency_histogram();
        hdr.record_correct(100_000, 1000).unwrap();
        for _ in 1..1000 {
            hdr.record_correct(500, 1000).unwrap();
        }
        assert_eq!(hdr.len(), 1099);
        assert!(hdr.value_at_quantile(0.95) >= 10_000);
        assert!(hdr.value_at_quantile(0.5) < 1_000);
    }

    #[test]
    fn corrected_latency_never_negative() {
        let early = corrected_latency(Duration::from_millis(5), Duration::from_millis(5));
        assert_eq!(early, Duration::ZERO);
    }
}
