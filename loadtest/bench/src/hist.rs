//! A small log-linear histogram of `u64` values (microseconds here).
//!
//! Owns bucketing and quantiles: values below 128 are counted exactly;
//! above, every power of two is split into 64 linear sub-buckets, so a
//! reported quantile is at most 1/64 (1.6 %) above the true value. Fixed
//! size (about 30 KiB), no allocation when recording, mergeable across
//! threads.
//!
//! Must never: allocate on [`Histogram::record`], or report a quantile
//! below the true value (bucket upper bounds are reported, clamped to the
//! largest value seen).

/// Values below this are their own bucket.
const EXACT: u64 = 128;
/// Sub-buckets per power of two above [`EXACT`].
const SUB: usize = 64;
const SUB_BITS: u32 = 6;
/// Powers of two above [`EXACT`] that a `u64` can reach.
const OCTAVES: usize = 64 - 7;
const BUCKETS: usize = EXACT as usize + OCTAVES * SUB;

/// A log-linear histogram.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u128,
    min: u64,
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
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Counts one value.
    #[inline]
    pub fn record(&mut self, value: u64) {
        self.counts[index_of(value)] += 1;
        self.count += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value recorded (0 when empty).
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    /// Mean of the values recorded (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0.0–1.0): the upper bound of the bucket
    /// holding the `ceil(q × count)`-th smallest value, never above the
    /// maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound(i).min(self.max);
            }
        }
        self.max
    }
}

/// The bucket of `v`.
#[inline]
fn index_of(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let top_bit = 63 - v.leading_zeros(); // ≥ 7
    let shift = top_bit - SUB_BITS; // ≥ 1
    let sub = (v >> shift) as usize - SUB; // 0..64
    EXACT as usize + (shift as usize - 1) * SUB + sub
}

/// The largest value that lands in bucket `i`.
fn upper_bound(i: usize) -> u64 {
    if i < EXACT as usize {
        return i as u64;
    }
    let j = i - EXACT as usize;
    let shift = (j / SUB + 1) as u32;
    let top = (j % SUB + SUB) as u64;
    ((top + 1) << shift).wrapping_sub(1)
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
    fn buckets_cover_every_value_with_bounded_error() {
        for v in [128u64, 129, 255, 256, 1000, 12_345, 1 << 40, u64::MAX] {
            let i = index_of(v);
            assert!(i < BUCKETS, "{v} -> {i}");
            let hi = upper_bound(i);
            assert!(hi >= v, "{v}: upper bound {hi}");
            assert!((hi - v) as f64 <= v as f64 / 64.0 + 1.0, "{v}: {hi}");
            if i > 0 {
                assert!(upper_bound(i - 1) < v, "{v} belongs in an earlier bucket");
            }
        }
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
