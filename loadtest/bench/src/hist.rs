//! Histograms of `u64` values (microseconds here), on `hdrhistogram`.
//!
//! Owns the histograms' shape — three significant figures (a reported
//! quantile is at most 0.1 % above the true value), values from 0 to
//! [`HIGHEST`] (larger ones are counted as [`HIGHEST`]), fixed at creation
//! so recording never allocates (about 184 KiB per histogram; a thread
//! holds one or two) — and the two figures kept exactly beside
//! the buckets: the largest value (quantiles are clamped to it, as before
//! this module used hdrhistogram) and the sum (for the mean).
//!
//! Must never: allocate on [`Histogram::record`], or report a quantile
//! below the true value (bucket upper bounds are reported, clamped to the
//! largest value seen).

/// Largest value told apart from larger ones: one hour in microseconds.
pub const HIGHEST: u64 = 3_600_000_000;
/// Significant figures of every bucket boundary.
const SIGFIG: u8 = 3;

/// A histogram with an exact maximum and mean.
#[derive(Clone)]
pub struct Histogram {
    buckets: hdrhistogram::Histogram<u64>,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("min", &self.min())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: hdrhistogram::Histogram::new_with_bounds(1, HIGHEST, SIGFIG)
                .expect("constant bounds are valid"),
            sum: 0,
            max: 0,
        }
    }

    /// Counts one value.
    #[inline]
    pub fn record(&mut self, value: u64) {
        self.buckets.saturating_record(value);
        self.sum += u128::from(value);
        self.max = self.max.max(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        self.buckets
            .add(&other.buckets)
            .expect("histograms of one shape add up");
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.len()
    }

    /// Largest value recorded, exactly (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value recorded (0 when empty; exact below 2048, else the
    /// lower bound of its bucket).
    pub fn min(&self) -> u64 {
        self.buckets.min()
    }

    /// Mean of the values recorded, exactly (0 when empty).
    pub fn mean(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum as f64 / n as f64,
        }
    }

    /// The value at quantile `q` (0.0–1.0): the upper bound of the bucket
    /// holding the `ceil(q × count)`-th smallest value, never above the
    /// maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count() == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0).max(f64::MIN_POSITIVE);
        self.buckets.value_at_quantile(q).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 0..100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 49);
        assert_eq!(h.quantile(0.99), 98);
        assert_eq!(h.quantile(1.0), 99);
        assert_eq!(h.min(), 0);
        assert_eq!(h.max(), 99);
    }

    #[test]
    fn quantiles_are_at_most_a_thousandth_above_the_value() {
        for v in [128u64, 129, 255, 256, 1000, 2049, 12_345, 1 << 30, HIGHEST] {
            let mut h = Histogram::new();
            h.record(v);
            h.record(u64::MAX); // so that the clamp to the maximum hides nothing
            let reported = h.quantile(0.5);
            assert!(reported >= v, "{v}: reported {reported}");
            assert!(
                (reported - v) as f64 <= v as f64 / 1000.0 + 1.0,
                "{v}: {reported}"
            );
        }
    }

    #[test]
    fn values_beyond_the_range_count_at_its_top_and_keep_the_exact_max() {
        let mut h = Histogram::new();
        h.record(1 << 40);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.max(), u64::MAX);
        assert!(h.quantile(0.5) >= HIGHEST);
        assert_eq!(h.quantile(1.0), h.buckets.max());
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5);
        let p99 = h.quantile(0.99);
        assert!((50_000..=50_000 + 50_000 / 64).contains(&p50), "{p50}");
        assert!((99_000..=99_000 + 99_000 / 64).contains(&p99), "{p99}");
        assert!((50_000..=50_000 + 50_000 / 1000).contains(&p50), "{p50}");
        assert!((99_000..=99_000 + 99_000 / 1000).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 100_000);
        assert!((h.mean() - 50_000.5).abs() < 1e-6);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(1_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.min(), 10);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.quantile(1.0), 1_000_000);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
