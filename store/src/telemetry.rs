//! Counters a collection keeps about its own background work: WAL fsync
//! latency, seal and compaction durations. Plain atomics, no exporter: the server
//! renders them (Prometheus text), tests read them directly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of every [`Histogram`]'s buckets: 100 µs to 60 s,
/// about three per decade, wide enough for an fsync on a fast disk and a seal of
/// a million points alike.
pub const BUCKETS_SECS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 60.0,
];

/// A latency histogram with the fixed [`BUCKETS_SECS`], safe to record into
/// from any thread.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot counts those
    /// above every bound.
    buckets: [AtomicU64; BUCKETS_SECS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] (each field read once).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts, one per bound of [`BUCKETS_SECS`] (observations at or
    /// below it); `count` is the `+Inf` bucket.
    pub cumulative: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum_secs: f64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS_SECS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS_SECS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f` and records how long it took.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let out = f();
        self.observe(t.elapsed());
        out
    }

    /// The counts so far. The cumulative buckets are summed from one read of
    /// each bucket, so they never decrease and the last equals `count` as
    /// reported here.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(BUCKETS_SECS.len());
        let mut running = 0u64;
        for b in &self.buckets[..BUCKETS_SECS.len()] {
            running += b.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let count = running + self.buckets[BUCKETS_SECS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_secs: self.sum_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }
}

/// What one collection has measured since it was opened (see
/// [`Collection::telemetry`](crate::Collection::telemetry)).
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// Each `fdatasync` of the WAL (group commits, rotations).
    pub wal_fsync: HistogramSnapshot,
    /// Each sealed chunk: encode, graph build, write, open and install.
    pub seal: HistogramSnapshot,
    /// Each compaction (or codec refit) that rewrote segments.
    pub compaction: HistogramSnapshot,
    /// Frozen chunks waiting to be sealed, the growing segment not counted.
    pub seal_queue: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // <= 0.0001
        h.observe(Duration::from_micros(100)); // == 0.0001, inclusive
        h.observe(Duration::from_millis(3)); // <= 0.005
        h.observe(Duration::from_secs(120)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative[0], 2);
        assert_eq!(s.cumulative[4], 2, "0.0025 holds nothing new");
        assert_eq!(s.cumulative[5], 3);
        assert_eq!(
            *s.cumulative.last().expect("buckets"),
            3,
            "120 s is +Inf only"
        );
        assert!((s.sum_secs - 120.00315).abs() < 1e-9, "{}", s.sum_secs);
    }

    #[test]
    fn time_records_the_closure() {
        let h = Histogram::default();
        let v = h.time(|| 7);
        assert_eq!(v, 7);
        assert_eq!(h.snapshot().count, 1);
    }
}
