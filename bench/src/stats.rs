//! Small statistics helpers for benchmark figures: the median of repeated runs with its spread,
//! and percentiles of latency samples.
//!
//! Benchmarks report figures, never assert them, so these helpers only summarise; they do not
//! judge.

use serde::Serialize;

/// A figure measured several times: the median and the spread (min and max) of the runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Summary {
    /// The median of the runs (the mean of the two middle values for an even count).
    pub(crate) median: f64,
    /// The smallest run.
    pub(crate) min: f64,
    /// The largest run.
    pub(crate) max: f64,
    /// How many runs the figure summarises.
    pub(crate) runs: usize,
}

impl Summary {
    /// Summarises `values`; `None` when there are none (or any is NaN, which would make the
    /// order meaningless).
    pub(crate) fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Some(Summary { median, min: sorted[0], max: sorted[n - 1], runs: n })
    }
}

/// The `p`-th percentile (0 to 100) of `samples` by the nearest-rank method: the smallest sample
/// such that at least `p` % of the samples are at or below it. `None` for no samples.
pub(crate) fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || samples.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p = p.clamp(0.0, 100.0);
    // Nearest rank: ceil(p/100 * n), at least 1.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_summary(values: &[f64], expect: Option<(f64, f64, f64)>) {
        let got = Summary::of(values).map(|s| (s.median, s.min, s.max));
        assert_eq!(got, expect, "summary of {values:?}");
    }

    #[test]
    fn summary_takes_median_and_spread() {
        check_summary(&[], None);
        check_summary(&[f64::NAN, 1.0], None);
        check_summary(&[3.0], Some((3.0, 3.0, 3.0)));
        check_summary(&[5.0, 1.0, 3.0], Some((3.0, 1.0, 5.0)));
        check_summary(&[4.0, 1.0, 3.0, 2.0], Some((2.5, 1.0, 4.0)));
    }

    #[track_caller]
    fn check_percentile(samples: &[f64], p: f64, expect: Option<f64>) {
        assert_eq!(percentile(samples, p), expect, "p{p} of {samples:?}");
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        check_percentile(&[], 50.0, None);
        check_percentile(&[7.0], 99.0, Some(7.0));
        check_percentile(&hundred, 50.0, Some(50.0));
        check_percentile(&hundred, 99.0, Some(99.0));
        check_percentile(&hundred, 100.0, Some(100.0));
        check_percentile(&hundred, 0.0, Some(1.0));
        check_percentile(&[3.0, 1.0, 2.0], 50.0, Some(2.0));
    }
}
